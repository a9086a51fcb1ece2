// With Redis: the node the SDK is on is killed mid-stream; the SDK reconnects to
// another node of the same deployment (same epochs) and resumes with a lossless replay.
// Skipped when redis-server is not installed.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Orders, Portfolio, TradecastClient } from '../dist/index.js';
import {
  DurableLog,
  Feed,
  Server,
  freshSnapshot,
  haveRedis,
  next,
  normalizeOrders,
  normalizePortfolio,
  ready,
  startRedis,
  token,
  tradingSession,
  until,
} from './support.mjs';

const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

test('Redis: kill -9 the node mid-stream, resume on another node without loss', { skip: !haveRedis() && 'redis-server not installed' }, async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.kill());
  const flags = ['--redis', redis.url, '--lease-ms', '1000', '--checkpoint-ms', '300', '--live-interval-ms', '50'];
  const a = await Server.start(flags);
  cleanup.push(() => a.kill());
  const b = await Server.start(flags);
  cleanup.push(() => b.kill());
  await Promise.all([ready(a), ready(b)]);

  let current = a; // what a load balancer would pick
  const c = new TradecastClient({
    url: () => current.url,
    token: token(42, 'client'),
    WebSocket,
    backoffInitialMs: 50,
    backoffMaxMs: 250,
  });
  cleanup.push(() => c.close());
  const portfolio = new Portfolio().attach(c);
  const orders = new Orders().attach(c);
  const log = new DurableLog(c);
  const resets = [];
  c.on('reset', (r) => resets.push(r));
  await c.connect();

  const feed = new Feed('redis-sdk');
  const session = tradingSession(feed, { logins: [42], steps: 90, seed: 9 });
  const { batches } = session;
  const third = Math.floor(batches.length / 3);
  for (let i = 0; i < third; i++) await b.post(batches[i]); // into the streams, via the other node
  await until(() => c.channel('portfolio:42').seq >= 5, 5000, 'the stream to flow');

  // Mid-stream: more batches on their way while node A dies.
  const resumed = next(c, 'resumed', 15000);
  for (let i = third; i < 2 * third; i++) await b.post(batches[i]);
  current = b;
  await a.kill();
  const r = await resumed;
  assert.deepEqual(r.recovered.sort(), ['orders:42', 'portfolio:42'], 'same epochs on every node: a replay');
  assert.deepEqual(r.reset, []);
  for (let i = 2 * third; i < batches.length; i++) await b.post(batches[i]);
  await b.post([feed.tick('EURUSD', session.lastPrice + 0.0006)]);

  await until(async () => {
    const snap = await freshSnapshot(b, 42, 'client', ['portfolio:42', 'orders:42']);
    assert.deepEqual(portfolio.toJSON(), normalizePortfolio(snap.portfolio_full));
    assert.deepEqual(orders.toJSON(), normalizeOrders(snap.orders_full));
    const sub = snap.messages.find((m) => m.type === 'subscribed' && m.channel === 'portfolio:42');
    assert.equal(c.channel('portfolio:42').seq, sub.seq);
    return true;
  }, 10000, 'the models to equal a fresh snapshot on node B');

  // One epoch, every durable message exactly once.
  log.check();
  assert.deepEqual(resets, []);
  for (const channel of ['portfolio:42', 'orders:42']) {
    const seqs = log.durable(channel).map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: c.channel(channel).seq }, (_, i) => i + 1), channel);
  }
  assert.equal(c.stats.connections, 2);
});
