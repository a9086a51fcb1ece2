// A durable message lost on the way (dropped by the test) is detected from the next
// seq and healed by a resubscribe with `since`: the replay brings it back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Orders, Portfolio, TradecastClient } from '../dist/index.js';
import {
  DurableLog,
  Feed,
  Server,
  freshSnapshot,
  next,
  normalizeOrders,
  normalizePortfolio,
  recordingWebSocket,
  token,
  tradingSession,
  until,
} from './support.mjs';

let server;
let c;
before(async () => {
  server = await Server.start(['--live-interval-ms', '50']);
});
after(async () => {
  c?.close();
  await server.kill();
});

test('a dropped durable message: gap detected, resubscribe with since, replay, complete state', async () => {
  const rec = recordingWebSocket();
  c = new TradecastClient({ url: server.url, token: token(42, 'client'), WebSocket: rec.WebSocket });
  const portfolio = new Portfolio().attach(c);
  const orders = new Orders().attach(c);
  const log = new DurableLog(c);
  const gaps = [];
  c.on('gap', (g) => gaps.push(g));
  const resets = [];
  c.on('reset', (r) => resets.push(r));

  // Lose portfolio:42's seq 3 and orders:42's seq 2 on the way in, once each.
  const drop = new Map([['portfolio:42', 3], ['orders:42', 2]]);
  const dropped = [];
  const original = c.handleFrame.bind(c);
  c.handleFrame = (data) => {
    const m = JSON.parse(data);
    if (m.seq !== undefined && drop.get(m.channel) === m.seq) {
      drop.delete(m.channel);
      dropped.push(m);
      return;
    }
    original(data);
  };
  await c.connect();

  const feed = new Feed();
  const session = tradingSession(feed, { logins: [42], steps: 50, seed: 3 });
  for (const batch of session.batches) await server.post(batch);
  await server.post([feed.tick('EURUSD', session.lastPrice + 0.0005)]);

  // POST answers once the messages are published; the SDK reads them a moment later.
  await until(() => gaps.length === 2 && c.channels().every((x) => !x.resyncing), 3000, 'both gaps healed');
  assert.deepEqual(dropped.map((m) => [m.channel, m.seq]), [['portfolio:42', 3], ['orders:42', 2]]);
  assert.deepEqual(gaps.map((g) => [g.channel, g.expected, g.received]), [['portfolio:42', 3, 4], ['orders:42', 2, 3]]);

  // The SDK asked for a replay from the last seq it applied.
  const resubscribes = rec.sent.filter((m) => m.type === 'subscribe');
  const epoch = c.channel('portfolio:42').epoch;
  assert.deepEqual(
    resubscribes.map((m) => [m.channel, m.since]),
    [['portfolio:42', { epoch, seq: 2 }], ['orders:42', { epoch, seq: 1 }]],
  );
  assert.deepEqual(resets, [], 'healed by a replay, not a snapshot');

  // Complete: every durable message exactly once, in order (the lost ones from the replay).
  log.check();
  const seqs = log.durable('portfolio:42').map((m) => m.seq);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1));
  assert.equal(seqs.length, c.channel('portfolio:42').seq);
  assert.ok(seqs.length > 10);
  const orderSeqs = log.durable('orders:42').map((m) => m.seq);
  assert.deepEqual(orderSeqs, Array.from({ length: orderSeqs.length }, (_, i) => i + 1));
  assert.deepEqual(log.durable('portfolio:42')[2], dropped[0], 'the replay carried the lost message');

  await until(async () => {
    const snap = await freshSnapshot(server, 42, 'client', ['portfolio:42', 'orders:42']);
    assert.deepEqual(portfolio.toJSON(), normalizePortfolio(snap.portfolio_full));
    assert.deepEqual(orders.toJSON(), normalizeOrders(snap.orders_full));
    return true;
  }, 5000, 'the models to equal a fresh snapshot');
  assert.equal(c.stats.gaps, 2);
});
