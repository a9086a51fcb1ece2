// Test support: run the real `tradecast serve` binary on loopback ports, mint tokens,
// feed events through POST /v1/events, read fresh snapshots over a plain WebSocket.
import { execFileSync, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '../../..');
/** The binary under test: $TRADECAST_BIN, or the workspace's debug build. */
export const BIN = process.env.TRADECAST_BIN || resolve(REPO, 'target/debug/tradecast');
export const SECRET = 'sdk-test-secret';

if (!existsSync(BIN)) {
  if (process.env.TRADECAST_BIN) throw new Error(`TRADECAST_BIN=${BIN} does not exist`);
  // Not built yet: build it (once; the next test file finds it).
  process.stderr.write(`${BIN} is missing: cargo build -q -p tradecast\n`);
  execFileSync('cargo', ['build', '-q', '-p', 'tradecast'], { cwd: REPO, stdio: 'inherit' });
}

// ------------------------------------------------------------------ processes

const children = new Set();
function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** A `tradecast serve` process. */
export class Server {
  constructor(child, publicAddr, adminAddr, extra) {
    this.child = child;
    this.public = publicAddr;
    this.admin = adminAddr;
    this.extra = extra;
  }

  /** Start on free ports (or the given ones) with the test secret and `extra` flags. */
  static async start(extra = [], listen = '127.0.0.1:0', admin = '127.0.0.1:0') {
    const args = ['serve', '--listen', listen, '--admin-listen', admin, '--jwt-secret', SECRET, ...extra];
    const child = spawn(BIN, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'error' },
    });
    children.add(child);
    child.on('exit', () => children.delete(child));
    const line = await new Promise((resolveLine, reject) => {
      const rl = createInterface({ input: child.stdout });
      const timer = setTimeout(() => reject(new Error('tradecast printed no listening line')), 10000);
      rl.once('line', (l) => {
        clearTimeout(timer);
        rl.close();
        resolveLine(l);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tradecast exited (${code}) before listening`));
      });
    });
    child.stdout.resume(); // keep draining whatever it prints later
    const field = (key) => {
      const f = line.split(/\s+/).find((x) => x.startsWith(key));
      if (!f) throw new Error(`no ${key} in ${JSON.stringify(line)}`);
      return f.slice(key.length);
    };
    return new Server(child, field('public='), field('admin='), extra);
  }

  get url() {
    return `ws://${this.public}/ws`;
  }

  /** SIGKILL and wait for the exit. */
  async kill() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }

  /** SIGKILL, then a fresh process (empty state, new epoch) on the same ports. */
  async restart() {
    await this.kill();
    return this.again();
  }

  /** SIGTERM: the node drains (sends `reconnect`, closes with 1001) and exits. */
  terminate() {
    this.child.kill('SIGTERM');
    return new Promise((r) => (this.child.exitCode !== null ? r() : this.child.once('exit', r)));
  }

  /** A fresh process on the same ports (after this one exited). */
  async again() {
    let lastError;
    for (let i = 0; i < 50; i++) {
      try {
        return await Server.start(this.extra, this.public, this.admin);
      } catch (e) {
        lastError = e;
        await sleep(100);
      }
    }
    throw lastError;
  }

  pause() {
    this.child.kill('SIGSTOP');
  }

  resume() {
    this.child.kill('SIGCONT');
  }

  /** POST /v1/events; returns the JSON answer (throws unless 200). */
  async post(events) {
    const res = await fetch(`http://${this.admin}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(events),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`POST /v1/events: ${res.status} ${text}`);
    const answer = JSON.parse(text);
    if (answer.rejected?.length) throw new Error(`events rejected: ${text}`);
    return answer;
  }
}

/** GET /readyz on the admin listener until it answers 200. */
export async function ready(server, ms = 10000) {
  await until(async () => (await fetch(`http://${server.admin}/readyz`)).status === 200, ms, `${server.admin} ready`);
}

/** A free loopback TCP port. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** True when `redis-server` can be run (the Redis test is skipped otherwise). */
export function haveRedis() {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A throwaway redis-server (no persistence) on a free port; `.kill()` ends it. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  await new Promise((resolveUp, reject) => {
    const timer = setTimeout(() => reject(new Error('redis-server did not start')), 10000);
    child.stdout.on('data', (d) => {
      if (String(d).includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolveUp();
      }
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code})`)));
  });
  child.stdout.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

// ------------------------------------------------------------------ tokens

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT for the test secret. */
export function token(sub, role, ttlSecs = 3600, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: String(sub), role, exp: Math.floor(Date.now() / 1000) + ttlSecs }));
  const sig = createHmac('sha256', secret).update(`${head}.${claims}`).digest('base64url');
  return `${head}.${claims}.${sig}`;
}

// ------------------------------------------------------------------ helpers

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value; fails after `ms` with `what`. */
export async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last instanceof Error ? ': ' + last.message : ''}`);
    }
    await sleep(20);
  }
}

/** Resolve on the next `event` of `emitter` (satisfying `pred`), or fail after `ms`. */
export function next(emitter, event, ms = 5000, pred = () => true) {
  return new Promise((resolveNext, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const off = emitter.on(event, (value) => {
      if (!pred(value)) return;
      clearTimeout(timer);
      off();
      resolveNext(value);
    });
  });
}

/**
 * A `ws` WebSocket class that records every frame the SDK sends (`sent`, parsed) and
 * optionally does not answer the node's WebSocket pings (`autoPong: false`), so the
 * SDK's own JSON pings are the only sign of life the node gets.
 */
export function recordingWebSocket({ autoPong = true } = {}) {
  const sent = [];
  const sockets = [];
  class RecordingWebSocket extends WebSocket {
    constructor(url) {
      super(url, { autoPong });
      sockets.push(this);
    }
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  return { WebSocket: RecordingWebSocket, sent, sockets };
}

/**
 * Open a plain connection, read the first snapshot of each of `channels` (waiting
 * `settleMs` more for retained values such as the latest exposure table), close it.
 * Returns { type: last message of that type } per channel plus all messages.
 */
export async function freshSnapshot(server, sub, role, channels, settleMs = 150) {
  const ws = new WebSocket(`${server.url}?token=${token(sub, role)}`);
  const messages = [];
  const want = new Set(channels);
  await new Promise((resolveSnap, reject) => {
    const timer = setTimeout(() => reject(new Error('no snapshot within 5 s')), 5000);
    let settle = null;
    const seen = new Set();
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      messages.push(m);
      if (m.type === 'welcome') {
        for (const c of want) if (!m.channels.includes(c)) ws.send(JSON.stringify({ type: 'subscribe', channel: c }));
      }
      if (m.channel && want.has(m.channel) && m.type !== 'subscribed' && m.seq === undefined) seen.add(m.channel);
      if (seen.size === want.size && !settle) {
        settle = setTimeout(() => {
          clearTimeout(timer);
          resolveSnap();
        }, settleMs);
      }
    });
    ws.on('error', reject);
  });
  ws.terminate();
  const byType = {};
  for (const m of messages) if (m.channel && want.has(m.channel) && m.seq === undefined) byType[m.type] = m;
  return { ...byType, messages };
}

/** A portfolio_full body as the Portfolio model's toJSON() gives it. */
export function normalizePortfolio(full) {
  return {
    login: full.login,
    account: full.account,
    positions: [...full.positions].sort((a, b) => a.id - b.id),
  };
}

export function normalizeOrders(full) {
  return [...full.orders].sort((a, b) => a.id - b.id);
}

export function normalizeExposure(table) {
  return [...table.symbols].sort((a, b) => (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0));
}

/**
 * Records every durable message the SDK delivers and every `subscribed` it accepted,
 * and checks the stream: per channel, after each `subscribed` the durable seqs go on
 * from its position (recovered: from where we were) with no duplicate and no hole.
 */
export class DurableLog {
  constructor(client) {
    this.events = [];
    client.on('subscribed', (m) => this.events.push({ kind: 'subscribed', m }));
    client.on('message', (m) => {
      if (typeof m.seq === 'number') this.events.push({ kind: 'durable', m });
    });
  }

  durable(channel) {
    return this.events.filter((e) => e.kind === 'durable' && e.m.channel === channel).map((e) => e.m);
  }

  /** Throws on a duplicate or a missing durable message. */
  check() {
    const next = new Map(); // channel -> next expected seq
    const epochs = new Map();
    for (const { kind, m } of this.events) {
      if (kind === 'subscribed') {
        const prev = next.get(m.channel);
        if (!m.recovered || prev === undefined) next.set(m.channel, m.seq + 1);
        else if (epochs.get(m.channel) !== m.epoch) throw new Error(`recovered with another epoch: ${JSON.stringify(m)}`);
        epochs.set(m.channel, m.epoch);
        continue;
      }
      const want = next.get(m.channel);
      if (want === undefined) throw new Error(`durable message before subscribed: ${JSON.stringify(m)}`);
      if (m.seq < want) throw new Error(`duplicate on ${m.channel}: seq ${m.seq}, expected ${want}`);
      if (m.seq > want) throw new Error(`missing on ${m.channel}: seq ${m.seq}, expected ${want}`);
      next.set(m.channel, want + 1);
    }
    return true;
  }
}

// ------------------------------------------------------------------ events

/** Builds ingest events with per-source counters (one `src` for trades, one for ticks). */
export class Feed {
  constructor(src = 'sdk-test') {
    this.src = src;
    this.seq = 0;
    this.tickSeq = 0;
    this.ts = 1717430400000;
    this.deal = 500000;
  }

  ev(type, fields) {
    this.ts += 7;
    return { v: 1, type, src: this.src, seq: ++this.seq, ts: this.ts, ...fields };
  }

  account(login, balance, name = `Trader ${login}`) {
    return this.ev('account', { login, name, ccy: 'USD', leverage: 100, balance, credit: 0 });
  }

  tick(symbol, bid, spread = 0.0002) {
    this.ts += 3;
    const r = (x) => Math.round(x * 1e5) / 1e5;
    return {
      v: 1, type: 'tick', src: `${this.src}/ticks`, seq: ++this.tickSeq, ts: this.ts,
      symbol, bid: r(bid), ask: r(bid + spread), digits: 5,
    };
  }

  open(login, id, side, lots, priceOpen, symbol = 'EURUSD') {
    return this.ev('position', {
      op: 'open', login, position_id: id, symbol, side, vol: Math.round(lots * 10000),
      price_open: priceOpen, digits: 5, contract_size: 100000,
    });
  }

  update(login, id, fields) {
    return this.ev('position', { op: 'update', login, position_id: id, ...fields });
  }

  closeDeal(login, id, side, lots, price, profit, symbol = 'EURUSD') {
    return this.ev('deal', {
      login, deal: ++this.deal, position_id: id, action: side === 'buy' ? 'sell' : 'buy', entry: 'out',
      symbol, vol: Math.round(lots * 10000), price, profit, digits: 5, contract_size: 100000,
    });
  }

  close(login, id, profit) {
    return this.ev('position', { op: 'close', login, position_id: id, close_deal: this.deal, profit });
  }

  deposit(login, amount) {
    return this.ev('deal', { login, deal: ++this.deal, action: 'balance', profit: amount });
  }

  orderAdd(login, order, type, lots, price, symbol = 'EURUSD') {
    return this.ev('order', {
      op: 'add', login, order, symbol, order_type: type, state: 'placed',
      vol_initial: Math.round(lots * 10000), vol_current: Math.round(lots * 10000), price_order: price,
    });
  }

  orderUpdate(login, order, fields) {
    return this.ev('order', { op: 'update', login, order, ...fields });
  }

  orderDelete(login, order, state = 'canceled') {
    return this.ev('order', { op: 'delete', login, order, state });
  }

  ibLink(login, ib) {
    return this.ev('ib_link', { op: 'set', login, ib });
  }

  marginCall(login, op = 'enter') {
    return this.ev('margin_call', { op, login, equity: 900, margin: 1000, margin_level: 90, threshold: 100 });
  }
}

/** A small deterministic PRNG (mulberry32). */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A deterministic trading session for `logins`: accounts, positions opened, modified
 * (sl/tp, partial volume), closed with a deal, deposits, orders added/modified/deleted,
 * and ticks in between. Returns batches (arrays of events) to POST one after another.
 */
export function tradingSession(feed, { logins = [42], steps = 60, batch = 6, seed = 7 } = {}) {
  const rnd = prng(seed);
  const events = [];
  let price = 1.1;
  let nextId = 1000;
  const open = new Map(); // id -> {login, side, lots}
  const orders = new Map(); // order -> login
  for (const login of logins) events.push(feed.account(login, 10000));
  events.push(feed.tick('EURUSD', price));
  for (let i = 0; i < steps; i++) {
    const login = logins[Math.floor(rnd() * logins.length)];
    const r = rnd();
    const mine = [...open].filter(([, p]) => p.login === login);
    if (r < 0.25 || mine.length === 0) {
      const id = ++nextId;
      const side = rnd() < 0.5 ? 'buy' : 'sell';
      const lots = 0.1 * (1 + Math.floor(rnd() * 10));
      open.set(id, { login, side, lots });
      events.push(feed.open(login, id, side, lots, Math.round(price * 1e5) / 1e5));
    } else if (r < 0.4) {
      const [id] = mine[Math.floor(rnd() * mine.length)];
      const sl = Math.round((price - 0.005) * 1e5) / 1e5;
      const tp = Math.round((price + 0.005 + rnd() * 0.01) * 1e5) / 1e5;
      events.push(feed.update(login, id, { sl, tp }));
    } else if (r < 0.48) {
      const [id, p] = mine[Math.floor(rnd() * mine.length)];
      if (p.lots > 0.15) {
        p.lots = Math.round((p.lots / 2) * 100) / 100;
        events.push(feed.update(login, id, { vol: Math.round(p.lots * 10000) }));
      }
    } else if (r < 0.63) {
      const [id, p] = mine[Math.floor(rnd() * mine.length)];
      const profit = Math.round((rnd() - 0.5) * 200 * 100) / 100;
      events.push(feed.closeDeal(login, id, p.side, p.lots, price, profit));
      events.push(feed.close(login, id, profit));
      open.delete(id);
    } else if (r < 0.7) {
      events.push(feed.deposit(login, Math.round(rnd() * 1000)));
    } else if (r < 0.78) {
      const order = 90000 + i;
      orders.set(order, login);
      const at = Math.round((price - 0.002) * 1e5) / 1e5;
      events.push(feed.orderAdd(login, order, rnd() < 0.5 ? 'buy_limit' : 'sell_stop', 1, at));
    } else if (r < 0.85 && orders.size) {
      const [order, l] = [...orders][Math.floor(rnd() * orders.size)];
      events.push(feed.orderUpdate(l, order, { sl: Math.round((price - 0.01) * 1e5) / 1e5 }));
    } else if (r < 0.9 && orders.size) {
      const [order, l] = [...orders][Math.floor(rnd() * orders.size)];
      orders.delete(order);
      events.push(feed.orderDelete(l, order));
    } else {
      price += (rnd() - 0.5) * 0.002;
      events.push(feed.tick('EURUSD', price));
    }
    if (i % 5 === 4) {
      price += (rnd() - 0.5) * 0.001;
      events.push(feed.tick('EURUSD', price));
    }
  }
  const batches = [];
  for (let i = 0; i < events.length; i += batch) batches.push(events.slice(i, i + batch));
  return { batches, events, lastPrice: price };
}
