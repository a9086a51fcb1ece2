// Connecting, default channels, subscribe/unsubscribe, errors, token handling.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import { TradecastClient, TradecastError } from '../dist/index.js';
import { BIN, SECRET, Server, next, recordingWebSocket, sleep, token, until } from './support.mjs';

let server;
const clients = [];
before(async () => {
  server = await Server.start();
});
after(async () => {
  for (const c of clients) c.close();
  await server.kill();
});

function client(options) {
  const c = new TradecastClient({ url: server.url, WebSocket, ...options });
  clients.push(c);
  return c;
}

test('connect: welcome, default channels per role, state events', async () => {
  const roles = [
    [42, 'client', ['portfolio:42', 'orders:42', 'prices:forex']],
    [7, 'ib', ['commissions:7', 'network:7']],
    [1, 'admin', ['exposure', 'alerts']],
  ];
  for (const [sub, role, channels] of roles) {
    // A token printed by the binary itself works as well as one minted here.
    const tok = execFileSync(BIN, ['token', '--sub', String(sub), '--role', role, '--jwt-secret', SECRET]).toString().trim();
    const c = client({ token: tok });
    const states = [];
    c.on('state', (s) => states.push(s));
    const subscribed = [];
    c.on('subscribed', (m) => subscribed.push(m.channel));
    const welcome = await c.connect();
    assert.equal(welcome.user, sub);
    assert.equal(welcome.role, role);
    assert.deepEqual(welcome.channels, channels);
    assert.deepEqual(states, ['connecting', 'open']);
    assert.equal(c.state, 'open');
    await until(() => subscribed.length === channels.length, 3000, 'the default subscriptions');
    assert.deepEqual(subscribed, channels);
    assert.deepEqual(c.channels().map((x) => x.name), channels);
    for (const info of c.channels()) {
      assert.equal(info.durable, !(info.name.startsWith('prices:') || info.name === 'exposure'));
      assert.equal(info.seq, 0);
      assert.equal(typeof info.epoch, 'string');
    }
    assert.ok((await c.ping()) >= 0);
    c.close();
    assert.equal(c.state, 'closed');
  }
});

test('a token provider is called once per token; subscribe, errors, unsubscribe', async () => {
  const calls = [];
  const rec = recordingWebSocket();
  const c = client({
    WebSocket: rec.WebSocket,
    token: async (reason) => {
      calls.push(reason);
      return token(42, 'client');
    },
  });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  await c.connect();
  assert.deepEqual(calls, ['initial']);

  // Another trader's channel, the risk desk's channels: forbidden.
  for (const channel of ['portfolio:43', 'alerts', 'exposure', 'commissions:7']) {
    await assert.rejects(c.subscribe(channel), (e) => {
      assert.ok(e instanceof TradecastError);
      assert.equal(e.code, 'forbidden');
      assert.equal(e.channel, channel);
      return true;
    });
    assert.equal(c.channel(channel), undefined, 'a refused channel is not kept');
  }
  await assert.rejects(c.subscribe('portfolio:abc'), { code: 'invalid_channel' });
  await assert.rejects(c.subscribe('nope'), { code: 'invalid_channel' });
  assert.equal(c.state, 'open', 'errors leave the connection open');
  assert.deepEqual(errors, [], 'errors answered to a request reject its promise only');

  // An extra channel: subscribed, kept, then dropped.
  const reply = await c.subscribe('prices:metals');
  assert.equal(reply.channel, 'prices:metals');
  assert.equal(reply.recovered, false);
  assert.ok(c.channel('prices:metals'));
  // A held channel resyncs (a fresh snapshot).
  const resync = await c.subscribe('orders:42');
  assert.equal(resync.recovered, false);
  await c.unsubscribe('prices:metals');
  assert.equal(c.channel('prices:metals'), undefined);
  // Default channels can be unsubscribed too.
  await c.unsubscribe('prices:forex');
  assert.deepEqual(c.channels().map((x) => x.name), ['portfolio:42', 'orders:42']);
  const kinds = rec.sent.map((m) => m.type);
  assert.ok(kinds.includes('unsubscribe'));
  assert.ok((await c.ping()) >= 0);
});

test('a token refused at the upgrade (401) with a fixed token: closed, no reconnect loop', async () => {
  const bad = token(42, 'client', 3600, 'another-secret');
  const c = client({ token: bad, backoffInitialMs: 10 });
  const reconnecting = [];
  c.on('reconnecting', (r) => reconnecting.push(r));
  await assert.rejects(c.connect(), { code: 'closed' });
  assert.equal(c.state, 'closed');
  assert.deepEqual(reconnecting, []);
});

test('a token function whose tokens are refused (401) is asked again with backoff, until one works', async () => {
  const reasons = [];
  const c = client({
    backoffInitialMs: 20,
    backoffMaxMs: 100,
    token: (reason) => {
      reasons.push(reason);
      return reasons.length < 3 ? token(42, 'client', 3600 + reasons.length, 'wrong-secret') : token(42, 'client');
    },
  });
  const reconnecting = [];
  c.on('reconnecting', (r) => reconnecting.push(r));
  await c.connect();
  assert.deepEqual(reasons, ['initial', 'rejected', 'rejected']);
  assert.equal(reconnecting.length, 2);
  assert.ok(reconnecting.every((r) => /401/.test(r.reason)), JSON.stringify(reconnecting));
  assert.deepEqual(reconnecting.map((r) => r.attempt), [1, 2], 'each refusal counts as a failed attempt (backoff)');
});

test('in-band refresh: before `exp` the provider is asked ("expiring") and the node takes the new token; no reconnect', async () => {
  // Valid for ~2 s; with the default refreshBeforeMs (60 s) a short token is refreshed halfway.
  const tokens = [token(42, 'client', 2), token(42, 'client', 3600)];
  const reasons = [];
  const c = client({
    token: (reason) => {
      reasons.push(reason);
      return tokens[reasons.length - 1];
    },
  });
  const events = [];
  c.on('reconnecting', (r) => events.push(['reconnecting', r.code]));
  c.on('error', (e) => events.push(['error', e.code]));
  await c.connect();
  await sleep(3500); // past the first token's exp
  assert.deepEqual(reasons, ['initial', 'expiring']);
  assert.deepEqual(events, [], 'no error, no reconnect');
  assert.equal(c.state, 'open');
  assert.equal(c.stats.connections, 1);
  assert.ok((await c.ping()) >= 0, 'the connection still answers');
  c.close();
});

test('close 4001 (token expired): the provider is asked again, the session resumes; never the same token', async () => {
  // Valid for ~1 s: the node closes the connection with 4001 when `exp` passes.
  const tokens = [token(42, 'client', 1), token(42, 'client', 3600)];
  const reasons = [];
  const c = client({
    token: (reason) => {
      reasons.push(reason);
      return tokens[reasons.length - 1];
    },
    refreshBeforeMs: 0, // no in-band refresh: this is about the 4001 path
  });
  const sockets = [];
  c.on('connecting', () => sockets.push(reasons.length));
  await c.connect();
  const reconnecting = await next(c, 'reconnecting', 4000);
  assert.equal(reconnecting.code, 4001);
  assert.equal(reconnecting.delayMs, 0, 'a new token needs no backoff');
  const resumed = await next(c, 'resumed', 4000);
  assert.deepEqual(resumed.recovered.sort(), ['orders:42', 'portfolio:42']);
  assert.deepEqual(resumed.reset, []);
  assert.deepEqual(reasons, ['initial', 'expired']);
  assert.equal(c.state, 'open');

  // A fixed token that expires: closed for good, with the code.
  const fixed = client({ token: token(42, 'client', 1) });
  await fixed.connect();
  const closed = await next(fixed, 'closed', 4000);
  assert.equal(closed.code, 4001);
  assert.equal(fixed.state, 'closed');

  // A provider that has nothing new: closed, not a reconnect with the same token.
  const same = token(42, 'client', 1);
  let asked = 0;
  const stuck = client({
    token: () => {
      asked++;
      return same;
    },
    refreshBeforeMs: 0,
  });
  await stuck.connect();
  const end = await next(stuck, 'closed', 4000);
  assert.equal(end.code, 4001);
  assert.equal(asked, 2);
  await sleep(100);
  assert.equal(stuck.state, 'closed');
});
