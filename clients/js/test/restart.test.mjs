// The gateway is killed (SIGKILL) mid-stream and started again on the same ports. The
// embedded broker loses everything with the process, so the test (playing the trade
// server) re-posts the events; the new node has a new epoch. The SDK reconnects by
// itself, sees `recovered: false` (a 'reset'), and ends with exactly the state a fresh
// snapshot gives, with a durable stream free of duplicates and holes.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Orders, Portfolio, TradecastClient } from '../dist/index.js';
import {
  DurableLog,
  Feed,
  Server,
  freshSnapshot,
  next,
  normalizeOrders,
  normalizePortfolio,
  ready,
  sleep,
  token,
  tradingSession,
  until,
} from './support.mjs';

const FLAGS = ['--live-interval-ms', '50'];
let server;
let c;
after(async () => {
  c?.close();
  await server?.kill();
});

test('kill -9 mid-stream and restart: reconnect, reset, exact state, no duplicate, no hole', async () => {
  server = await Server.start(FLAGS);
  c = new TradecastClient({
    url: server.url,
    token: token(42, 'client'),
    WebSocket,
    backoffInitialMs: 50,
    backoffMaxMs: 250,
    connectTimeoutMs: 2000,
  });
  const portfolio = new Portfolio().attach(c);
  const orders = new Orders().attach(c);
  const log = new DurableLog(c);
  const states = [];
  c.on('state', (s) => states.push(s));
  const reconnecting = [];
  c.on('reconnecting', (r) => reconnecting.push(r));
  const resets = [];
  c.on('reset', (r) => resets.push(r));
  await c.connect();
  const epoch = c.channel('portfolio:42').epoch;

  const feed = new Feed();
  const session = tradingSession(feed, { logins: [42], steps: 90, seed: 5 });
  const { batches } = session;
  const half = Math.floor(batches.length / 2);
  for (let i = 0; i < half; i++) await server.post(batches[i]);
  // One more batch in flight, and the process dies under it.
  const inFlight = server.post(batches[half]).catch(() => 'lost');
  const resumed = next(c, 'resumed', 10000);
  const lost = next(c, 'reconnecting', 5000);
  await server.kill();
  await inFlight;
  await lost; // from here on nothing of the old connection is delivered
  const heldBefore = c.channel('portfolio:42').seq;
  assert.ok(heldBefore > 5, `the SDK had applied ${heldBefore} messages`);

  // Down for a while: the SDK retries with capped, jittered backoff.
  await sleep(600);
  assert.ok(reconnecting.length >= 2, `${reconnecting.length} attempts`);
  assert.ok(reconnecting.every((r) => r.delayMs >= 0 && r.delayMs < 250), JSON.stringify(reconnecting.map((r) => r.delayMs)));
  assert.equal(reconnecting[0].code, 1006);
  assert.equal(c.state === 'reconnecting' || c.state === 'connecting', true);

  server = await server.restart();
  const r = await resumed; // back on the new node, which is still empty
  // The trade server re-sends its state (the new node lost it), then goes on.
  for (let i = 0; i <= half; i++) await server.post(batches[i]);
  for (let i = half + 1; i < batches.length; i++) await server.post(batches[i]);
  await server.post([feed.tick('EURUSD', session.lastPrice + 0.0004)]);

  assert.deepEqual(r.recovered, []);
  assert.deepEqual(r.reset.sort(), ['orders:42', 'portfolio:42']);
  assert.deepEqual(resets.map((x) => [x.channel, x.cause]).sort(), [['orders:42', 'reconnect'], ['portfolio:42', 'reconnect']]);
  assert.equal(resets.find((x) => x.channel === 'portfolio:42').previous.seq, heldBefore);
  assert.notEqual(c.channel('portfolio:42').epoch, epoch, 'a new epoch');
  assert.equal(c.state, 'open');
  assert.equal(states.filter((s) => s === 'open').length, 2);

  await until(async () => {
    const snap = await freshSnapshot(server, 42, 'client', ['portfolio:42', 'orders:42']);
    assert.deepEqual(portfolio.toJSON(), normalizePortfolio(snap.portfolio_full));
    assert.deepEqual(orders.toJSON(), normalizeOrders(snap.orders_full));
    const sub = snap.messages.find((m) => m.type === 'subscribed' && m.channel === 'portfolio:42');
    assert.equal(c.channel('portfolio:42').seq, sub.seq, 'the SDK is at the node position');
    return true;
  }, 5000, 'the models to equal a fresh snapshot');

  log.check(); // no duplicate, no hole, in either epoch
  const newEpoch = c.channel('portfolio:42').epoch;
  const delivered = log.events.filter((e) => e.kind === 'durable' && e.m.channel === 'portfolio:42').map((e) => e.m.seq);
  const before = delivered.slice(0, heldBefore);
  const afterRestart = delivered.slice(heldBefore);
  assert.deepEqual(before, Array.from({ length: heldBefore }, (_, i) => i + 1));
  // The new node's whole stream, from its first message: every one exactly once.
  assert.deepEqual(afterRestart, Array.from({ length: c.channel('portfolio:42').seq }, (_, i) => i + 1));
  assert.ok(afterRestart.length > heldBefore);
  assert.notEqual(newEpoch, epoch);
});

test('drain (SIGTERM): reconnect advice and 1001 are followed at once, then the next node', async () => {
  const node = await Server.start(['--drain-ms', '400']);
  let successor = null;
  const d = new TradecastClient({
    url: node.url,
    token: token(43, 'client'),
    WebSocket,
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    connectTimeoutMs: 2000,
  });
  const raw = [];
  const original = d.handleFrame.bind(d);
  d.handleFrame = (data) => {
    raw.push(JSON.parse(data));
    original(data);
  };
  const reconnecting = [];
  d.on('reconnecting', (r) => reconnecting.push(r));
  try {
    // The gateway installs its SIGTERM handler only once it runs, a moment after the
    // "listening" line: a SIGTERM before that kills it outright (no drain). Wait.
    await ready(node);
    await sleep(100);
    await d.connect();
    const resumed = next(d, 'resumed', 10000);
    const exited = node.terminate();
    const first = await next(d, 'reconnecting', 3000);
    const context = JSON.stringify({ first, raw: raw.filter((m) => m.type !== 'price') });
    const advice = raw.find((m) => m.type === 'reconnect');
    assert.ok(advice && advice.after_ms <= 400, JSON.stringify(advice));
    assert.equal(first.code, 1001, context);
    assert.equal(first.delayMs, 0, 'moving is not a failure: no backoff');
    await exited;
    successor = await node.again();
    const r = await resumed.catch((e) => {
      throw new Error(`${e.message}; state ${d.state}; reconnecting ${JSON.stringify(reconnecting)}`);
    });
    assert.deepEqual(r.reset.sort(), ['orders:43', 'portfolio:43'], 'another node: a new epoch');
    assert.equal(d.state, 'open');
    assert.ok(reconnecting.slice(1).every((x) => x.code === 1006 && x.delayMs < 200), JSON.stringify(reconnecting));
  } finally {
    d.close();
    await node.kill();
    await successor?.kill();
  }
});
