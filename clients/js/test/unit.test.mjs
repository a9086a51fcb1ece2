// The SDK's protocol logic against a scripted fake WebSocket: situations the embedded
// broker cannot produce on demand (a server-initiated resync, an `unavailable` reply,
// exact backoff figures).
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Portfolio, TradecastClient } from '../dist/index.js';
import { sleep, until } from './support.mjs';

/** A WebSocket double: the test opens it, feeds it messages and closes it. */
function fakeSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code) {
      this.readyState = 3;
      this.closedWith = code;
    }
    // --- driven by the test
    recv(...messages) {
      if (this.readyState === 0) {
        this.readyState = 1;
        this.onopen?.({});
      }
      for (const m of messages) this.onmessage?.({ data: JSON.stringify(m) });
    }
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { FakeSocket, sockets, last: () => sockets[sockets.length - 1] };
}

const E = 'epoch-one';
const welcome = { type: 'welcome', user: 42, role: 'client', heartbeat_ms: 30000, channels: ['portfolio:42'] };
const sub = (seq, extra = {}) => ({ type: 'subscribed', channel: 'portfolio:42', epoch: E, seq, recovered: false, ...extra });
const full = (positions) => ({ type: 'portfolio_full', channel: 'portfolio:42', login: 42, account: null, positions });
const pos = (id, seq) => ({
  type: 'position_opened', channel: 'portfolio:42', id, symbol: 'EURUSD', side: 'buy', volume: 1, price_open: 1.1,
  sl: null, tp: null, swap: 0, profit: 0, price: 1.1, time: 1, seq,
});
const closed = (id, seq) => ({ type: 'position_closed', channel: 'portfolio:42', id, symbol: 'EURUSD', side: 'buy', volume: 1, profit: 1, seq });

const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close(); // also when a test failed half-way
});

function setup(options = {}) {
  const fake = fakeSockets();
  const c = new TradecastClient({ url: 'ws://test/ws', token: 'T', WebSocket: fake.FakeSocket, ...options });
  clients.push(c);
  const portfolio = new Portfolio().attach(c);
  const seen = { durable: [], resets: [], resumed: [], reconnecting: [], gaps: [], states: [] };
  c.on('message', (m) => m.seq !== undefined && seen.durable.push(m.seq));
  c.on('reset', (r) => seen.resets.push(r));
  c.on('resumed', (r) => seen.resumed.push(r));
  c.on('reconnecting', (r) => seen.reconnecting.push(r));
  c.on('gap', (g) => seen.gaps.push(g));
  c.on('state', (s) => seen.states.push(s));
  return { c, fake, portfolio, seen };
}

/** Wait for the SDK's next socket (connecting is asynchronous: the token may be fetched). */
async function nextSocket(fake, count) {
  await until(() => fake.sockets.length >= count, 2000, `socket #${count}`);
  return fake.sockets[count - 1];
}

test('url carries the token; duplicates dropped; reconnect resumes with since and ignores the automatic snapshot', async () => {
  const { c, fake, portfolio, seen } = setup({ backoffInitialMs: 1, backoffMaxMs: 1 });
  const connected = c.connect();
  const s1 = await nextSocket(fake, 1);
  assert.equal(s1.url, 'ws://test/ws?token=T');
  s1.recv(welcome, sub(0), full([]), pos(1, 1), pos(2, 2), pos(2, 2), closed(1, 1));
  await connected;
  assert.deepEqual(seen.durable, [1, 2]);
  assert.equal(c.stats.duplicates, 2, 'the second seq 2 and the late seq 1');
  assert.deepEqual([...portfolio.positions.keys()], [1, 2]);

  s1.drop(1006);
  assert.equal(seen.reconnecting.length, 1);
  const s2 = await nextSocket(fake, 2);
  // The node re-subscribes the default channel by itself (snapshot at seq 5) before it
  // reads our request; then a live message; then the answer to our resume.
  s2.recv(welcome);
  const resume = s2.sent.find((m) => m.type === 'subscribe');
  assert.deepEqual(resume, { type: 'subscribe', channel: 'portfolio:42', id: resume.id, since: { epoch: E, seq: 2 } });
  s2.recv(sub(5), full([]), pos(6, 6));
  assert.equal(portfolio.positions.size, 2, 'the automatic snapshot is superseded by the resume: ignored');
  s2.recv(
    sub(6, { id: resume.id, recovered: true }),
    closed(2, 3), pos(4, 4), pos(5, 5), pos(6, 6), // the replay
    pos(6, 6), // a copy queued before the resync
    pos(7, 7),
  );
  assert.deepEqual(seen.durable, [1, 2, 3, 4, 5, 6, 7], 'every durable message once, in order');
  assert.deepEqual([...portfolio.positions.keys()].sort(), [1, 4, 5, 6, 7]);
  assert.deepEqual(seen.resumed, [{ recovered: ['portfolio:42'], reset: [] }]);
  assert.deepEqual(seen.resets, []);
  assert.deepEqual(seen.states, ['connecting', 'open', 'reconnecting', 'connecting', 'open']);
  c.close();
});

test('a server-initiated subscribed (no id) mid-connection resets the channel', async () => {
  const { c, fake, portfolio, seen } = setup();
  c.connect();
  const s = await nextSocket(fake, 1);
  s.recv(welcome, sub(0), full([]), pos(1, 1), pos(2, 2));
  // E.g. the Redis broker lost the channel's log: it starts every subscriber over.
  const p9 = { ...pos(9, 0) };
  delete p9.seq;
  delete p9.type;
  delete p9.channel;
  s.recv({ type: 'subscribed', channel: 'portfolio:42', epoch: 'epoch-two', seq: 40, recovered: false }, full([p9]), pos(10, 41));
  assert.equal(seen.resets.length, 1);
  assert.deepEqual(seen.resets[0], { channel: 'portfolio:42', epoch: 'epoch-two', seq: 40, previous: { epoch: E, seq: 2 }, cause: 'server' });
  assert.deepEqual([...portfolio.positions.keys()], [9, 10]);
  assert.deepEqual(seen.durable, [1, 2, 41]);
  assert.deepEqual(c.channel('portfolio:42'), { name: 'portfolio:42', durable: true, epoch: 'epoch-two', seq: 41, resyncing: false });
  c.close();
});

test('a gap the history no longer covers: resubscribe with since, then a reset and a snapshot', async () => {
  const { c, fake, portfolio, seen } = setup();
  c.connect();
  const s = await nextSocket(fake, 1);
  s.recv(welcome, sub(0), full([]), pos(1, 1), pos(2, 2), pos(4, 4), pos(5, 5));
  assert.deepEqual(seen.gaps, [{ channel: 'portfolio:42', expected: 3, received: 4 }]);
  const resync = s.sent.find((m) => m.type === 'subscribe');
  assert.deepEqual(resync.since, { epoch: E, seq: 2 });
  assert.equal(c.channel('portfolio:42').resyncing, true);
  assert.deepEqual(seen.durable, [1, 2], 'held back until the reply');
  const p5 = { ...pos(5, 0) };
  delete p5.seq;
  delete p5.type;
  delete p5.channel;
  s.recv(sub(5, { id: resync.id }), full([p5]), pos(6, 6));
  assert.equal(seen.resets.length, 1);
  assert.equal(seen.resets[0].cause, 'gap');
  assert.deepEqual([...portfolio.positions.keys()], [5, 6]);
  assert.deepEqual(seen.durable, [1, 2, 6]);
  c.close();
});

test('backoff: full jitter, doubling, capped; reset after a stable connection; 4029 backs off harder', async () => {
  const { c, fake, seen } = setup({ backoffInitialMs: 2, backoffMaxMs: 16, stableAfterMs: 40, random: () => 0.999 });
  c.connect();
  for (let n = 1; n <= 6; n++) (await nextSocket(fake, n)).drop(1006); // refused, refused, …
  const s7 = await nextSocket(fake, 7);
  assert.deepEqual(seen.reconnecting.map((r) => r.delayMs), [1, 3, 7, 15, 15, 15]);
  s7.recv(welcome, sub(0), full([]));
  s7.drop(1006); // not stable yet: the backoff goes on
  const s8 = await nextSocket(fake, 8);
  assert.equal(seen.reconnecting[6].delayMs, 15);
  s8.recv(welcome);
  await sleep(80); // stable
  s8.drop(1006);
  assert.equal(seen.reconnecting[7].delayMs, 1, 'reset after a stable connection');
  const s9 = await nextSocket(fake, 9);
  s9.recv(welcome);
  s9.drop(4029, 'rate limited');
  assert.equal(seen.reconnecting[8].delayMs, 15, 'rate limited: at least 2^4 × initial (capped)');
  c.close();
  assert.equal(c.state, 'closed');
});

test('drain: reconnect advice, then 1001: reconnect at once without backoff', async () => {
  const { c, fake, seen } = setup({ backoffInitialMs: 1000 });
  c.connect();
  const s = await nextSocket(fake, 1);
  s.recv(welcome, sub(0), full([]), { type: 'reconnect', after_ms: 20 });
  s.drop(1001, 'server draining: reconnect');
  assert.deepEqual(seen.reconnecting.map((r) => [r.code, r.delayMs]), [[1001, 0]]);
  const s2 = await nextSocket(fake, 2);
  s2.recv(welcome);
  assert.deepEqual(s2.sent.find((m) => m.type === 'subscribe').since, { epoch: E, seq: 0 });
  c.close();
});

test('unavailable answer to a resume: asked again later from the same position', async () => {
  const { c, fake, seen } = setup({ backoffMaxMs: 20 });
  c.connect();
  const s = await nextSocket(fake, 1);
  s.recv(welcome, sub(0), full([]), pos(1, 1));
  s.drop(1006);
  const s2 = await nextSocket(fake, 2);
  s2.recv(welcome);
  const first = s2.sent.find((m) => m.type === 'subscribe');
  const errors = [];
  c.on('error', (e) => errors.push(e.code));
  s2.recv({ type: 'error', id: first.id, code: 'unavailable', message: 'broker unavailable', channel: 'portfolio:42' });
  assert.deepEqual(errors, ['unavailable']);
  await until(() => s2.sent.filter((m) => m.type === 'subscribe').length === 2, 1000, 'the retry');
  const retry = s2.sent.filter((m) => m.type === 'subscribe')[1];
  assert.deepEqual(retry.since, { epoch: E, seq: 1 });
  s2.recv(sub(1, { id: retry.id, recovered: true }), pos(2, 2));
  assert.deepEqual(seen.durable, [1, 2]);
  c.close();
});

test('connect without any WebSocket implementation explains what to pass', async () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    const c = new TradecastClient({ url: 'ws://x/ws', token: 't' });
    await assert.rejects(c.connect(), /pass the `ws` package/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});
