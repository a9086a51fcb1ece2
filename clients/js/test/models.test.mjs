// The local state models end up equal to a fresh snapshot after a stream of deltas.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Exposure, Orders, Portfolio, Prices, TradecastClient } from '../dist/index.js';
import {
  DurableLog,
  Feed,
  Server,
  freshSnapshot,
  normalizeExposure,
  normalizeOrders,
  normalizePortfolio,
  token,
  tradingSession,
  until,
} from './support.mjs';

let server;
const clients = [];
before(async () => {
  server = await Server.start(['--live-interval-ms', '50', '--exposure-interval-ms', '100']);
});
after(async () => {
  for (const c of clients) c.close();
  await server.kill();
});

function client(sub, role) {
  const c = new TradecastClient({ url: server.url, token: token(sub, role), WebSocket });
  clients.push(c);
  return c;
}

test('Portfolio, Orders and Exposure equal fresh snapshots after a stream of deltas; typed events', async () => {
  const trader = client(42, 'client');
  const portfolio = new Portfolio().attach(trader);
  const orders = new Orders().attach(trader);
  const prices = new Prices().attach(trader);
  const log = new DurableLog(trader);
  const closed = [];
  trader.on('position_closed', (m) => closed.push(m));
  const traderAlerts = [];
  trader.on('alert', (m) => traderAlerts.push(m));

  const ib = client(7, 'ib');
  const commissions = [];
  const joined = [];
  ib.on('commission', (m) => commissions.push(m));
  ib.on('client_joined', (m) => joined.push(m));

  const admin = client(1, 'admin');
  const exposure = new Exposure().attach(admin);
  const alerts = [];
  admin.on('alert', (m) => alerts.push(m));

  await Promise.all([trader.connect(), ib.connect(), admin.connect()]);
  assert.ok(portfolio.ready && orders.ready, 'the initial snapshots were applied');
  assert.equal(portfolio.channel, 'portfolio:42');

  const feed = new Feed();
  await server.post([feed.account(42, 10000, 'Ann Lee'), feed.ibLink(42, 7)]);
  const session = tradingSession(feed, { logins: [42, 43], steps: 80, seed: 11 });
  for (const batch of session.batches) await server.post(batch);
  await server.post([feed.marginCall(42), feed.tick('EURUSD', session.lastPrice + 0.0007)]);

  // Equal to what a brand-new connection is told (live figures settle within a few
  // --live-interval-ms, the exposure table within --exposure-interval-ms).
  await until(async () => {
    const snap = await freshSnapshot(server, 42, 'client', ['portfolio:42', 'orders:42']);
    assert.deepEqual(portfolio.toJSON(), normalizePortfolio(snap.portfolio_full));
    assert.deepEqual(orders.toJSON(), normalizeOrders(snap.orders_full));
    return true;
  }, 5000, 'the trader models to equal a fresh snapshot');
  assert.ok(portfolio.positions.size > 0, 'some positions are open');
  assert.ok(orders.orders.size > 0, 'some orders are working');

  await until(async () => {
    const snap = await freshSnapshot(server, 1, 'admin', ['exposure'], 300);
    assert.deepEqual(exposure.toJSON(), normalizeExposure(snap.exposure));
    return exposure.symbols.size > 0;
  }, 5000, 'the exposure model to equal a fresh table');

  // Typed events.
  const closes42 = session.events.filter((e) => e.type === 'position' && e.op === 'close' && e.login === 42);
  assert.equal(closed.length, closes42.length, 'one position_closed per close');
  assert.deepEqual(closed.map((m) => m.id), closes42.map((e) => e.position_id));
  assert.ok(closed.length > 0);
  assert.equal(joined.length, 1);
  assert.equal(joined[0].client, 42);
  assert.equal(commissions.length, closes42.length, 'one commission per closing deal of the downline');
  assert.ok(commissions.every((c) => c.client === 42 && c.level === 1 && c.amount > 0));
  assert.ok(alerts.some((a) => a.kind === 'margin_call' && a.login === 42), 'the risk desk got the margin call');
  assert.equal(traderAlerts.length, 1);
  assert.equal(portfolio.marginAlert?.kind, 'margin_call');
  assert.ok(prices.quotes.get('EURUSD'), 'prices arrive');

  // A clean stream: no duplicate, no hole, nothing lost.
  log.check();
  assert.equal(trader.stats.gaps, 0);
  assert.equal(trader.stats.duplicates, 0);
});
