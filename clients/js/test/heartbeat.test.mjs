// Heartbeat: the SDK's pings keep a link alive that would otherwise time out, and a
// silent (frozen) node is detected, dropped and reconnected to.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { TradecastClient } from '../dist/index.js';
import { DurableLog, Feed, Server, next, recordingWebSocket, sleep, token } from './support.mjs';

const HEARTBEAT = 300;
let server;
const clients = [];
before(async () => {
  server = await Server.start(['--heartbeat-ms', String(HEARTBEAT)]);
});
after(async () => {
  for (const c of clients) c.close();
  server.resume();
  await server.kill();
});

test('without pings a silent peer is closed with 4008 (control)', async () => {
  // `ws` answers the node's WebSocket pings by default; turn that off to play a
  // client that sends nothing.
  const ws = new WebSocket(`${server.url}?token=${token(42, 'client')}`, { autoPong: false });
  const started = Date.now();
  const code = await new Promise((resolve) => ws.on('close', (c) => resolve(c)));
  assert.equal(code, 4008);
  assert.ok(Date.now() - started >= 3 * HEARTBEAT);
});

test('the SDK pings every heartbeat_ms and keeps the link alive', async () => {
  const rec = recordingWebSocket({ autoPong: false }); // only the SDK's JSON pings count
  const c = new TradecastClient({ url: server.url, token: token(42, 'client'), WebSocket: rec.WebSocket });
  clients.push(c);
  const events = [];
  c.on('state', (s) => events.push(s));
  const welcome = await c.connect();
  assert.equal(welcome.heartbeat_ms, HEARTBEAT);
  await sleep(10 * HEARTBEAT); // > 3 intervals: the node would have closed a silent client
  assert.equal(c.state, 'open');
  assert.deepEqual(events, ['connecting', 'open'], 'no reconnect');
  assert.equal(rec.sockets.length, 1);
  const pings = rec.sent.filter((m) => m.type === 'ping').length;
  assert.ok(pings >= 7 && pings <= 11, `${pings} pings in ${10 * HEARTBEAT} ms`);
  c.close();
});

test('a frozen node (SIGSTOP) is detected as a dead link; the SDK reconnects and resumes', async () => {
  const c = new TradecastClient({
    url: server.url,
    token: token(42, 'client'),
    WebSocket,
    heartbeatMs: 200, // below the node's 300: the SDK uses the smaller
    connectTimeoutMs: 1000,
    backoffInitialMs: 50,
    backoffMaxMs: 200,
  });
  clients.push(c);
  const log = new DurableLog(c);
  await c.connect();
  const feed = new Feed('hb');
  await server.post([feed.account(42, 5000), feed.open(42, 7001, 'buy', 1, 1.1)]);
  await sleep(100);

  server.pause();
  const frozenAt = Date.now();
  const r = await next(c, 'reconnecting', 3000);
  const detectedAfter = Date.now() - frozenAt;
  assert.match(r.reason, /heartbeat timeout/);
  assert.equal(r.code, 4000);
  // Nothing for 2 intervals after a ping: between 2 and 3 intervals of silence.
  assert.ok(detectedAfter >= 2 * 200 - 50 && detectedAfter < 3 * 200 + 300, `detected after ${detectedAfter} ms`);

  server.resume();
  // Published while the SDK is away (or just back): a replay or live, never lost.
  const posted = server.post([feed.update(42, 7001, { tp: 1.2 })]);
  const resumed = await next(c, 'resumed', 5000);
  await posted;
  // Same process, same epoch: a lossless replay, no snapshot.
  assert.deepEqual(resumed.recovered.sort(), ['orders:42', 'portfolio:42']);
  assert.deepEqual(resumed.reset, []);
  assert.equal(c.state, 'open');
  await server.post([feed.update(42, 7001, { sl: 1.09 })]);
  await sleep(100);
  assert.deepEqual(log.durable('portfolio:42').map((m) => m.seq), [1, 2, 3, 4]);
  log.check();
  c.close();
});
