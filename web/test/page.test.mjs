// The dashboard in a real browser (Debian's Chromium driven by playwright-core) against a
// real `tradecast demo`: the trader's live profits move, a position the simulator closes
// shows in the trader's closed-trade feed and its commission in the IB's ticker, the
// risk view shows (sortable) exposure, and after the node is SIGKILLed and restarted on
// the same port the page reconnects by itself and data flows again. Opens the URL the
// demo prints, as a new user would. Saves screenshots of the three views to
// target/screenshots/ ($UPDATE_SCREENSHOTS=1: to docs/screenshots/, the README's).
//
// Binary: $TRADECAST_BIN, by default ../target/debug/tradecast (built when missing).
// Browser: $CHROMIUM_BIN, by default /usr/bin/chromium (`apt-get install chromium`).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(here, '../..');
const BIN = process.env.TRADECAST_BIN || resolve(REPO, 'target/debug/tradecast');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = resolve(REPO, process.env.UPDATE_SCREENSHOTS === '1' ? 'docs/screenshots' : 'target/screenshots');
const VIEWPORT = { width: 1280, height: 800 };
/**
 * How long to wait for the simulator to close one of the demo trader's positions before
 * the test closes one itself ($PAGE_TEST_CLOSE_WAIT_MS=0 exercises that path).
 */
const SIMULATOR_CLOSE_WAIT_MS = Number(process.env.PAGE_TEST_CLOSE_WAIT_MS ?? 20000);

if (!existsSync(BIN)) {
  if (process.env.TRADECAST_BIN) throw new Error(`TRADECAST_BIN=${BIN} does not exist`);
  process.stderr.write(`${BIN} is missing: cargo build -q -p tradecast\n`);
  execFileSync('cargo', ['build', '-q', '-p', 'tradecast'], { cwd: REPO, stdio: 'inherit' });
}
if (!existsSync(CHROMIUM)) {
  throw new Error(`${CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM_BIN)`);
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

/**
 * `tradecast demo` on `listen`; resolves once it printed its listening line and the
 * dashboard URL it tells a new user to open.
 */
async function startDemo(listen = '127.0.0.1:0') {
  const child = spawn(BIN, ['demo', '--listen', listen, '--admin-listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'error' },
  });
  children.add(child);
  const exited = new Promise((done) => child.once('exit', done));
  exited.then(() => children.delete(child));
  const [line, url] = await new Promise((resolveLines, reject) => {
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error('tradecast demo printed no dashboard URL')), 15000);
    let listening;
    rl.on('line', (l) => {
      if (!listening) {
        listening = l;
        return;
      }
      const printed = l.match(/^\s+(http:\/\/\S+\/)$/);
      if (printed) {
        clearTimeout(timer);
        rl.close();
        resolveLines([listening, printed[1]]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tradecast demo exited (${code}) before printing its URL`));
    });
  });
  child.stdout.resume();
  const field = (key) => {
    const f = line.split(/\s+/).find((x) => x.startsWith(key));
    if (!f) throw new Error(`no ${key} in ${JSON.stringify(line)}`);
    return f.slice(key.length);
  };
  return {
    child,
    url,
    public: field('public='),
    admin: field('admin='),
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

// ------------------------------------------------------------------ page helpers

/** A fresh page (own browser context: no shared storage) with the indicator's history recorded. */
async function openPage(browser, url) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  // Every change of #status: [data-state, text], in order.
  await page.evaluate(() => {
    const box = document.querySelector('#status');
    const history = (window.__status = []);
    const record = () => {
      const entry = [box.dataset.state, document.querySelector('#status-text').textContent];
      const last = history[history.length - 1];
      if (!last || last[0] !== entry[0] || last[1] !== entry[1]) history.push(entry);
    };
    new MutationObserver(record).observe(box, { attributes: true, subtree: true, childList: true, characterData: true });
    record();
  });
  return { page, context, errors };
}

async function clickIdentity(page, role) {
  const button = page.locator(`#identities button[data-role="${role}"]`);
  await button.waitFor({ timeout: 10000 });
  await button.click();
  // The click resets `body[data-role]` at once and the new session's `welcome` sets it
  // again; the indicator only repaints on the next animation frame, so waiting for it
  // alone could see the previous session's "connected".
  await page.waitForSelector(`body[data-role="${role}"]`, { timeout: 10000 });
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
}

const text = (page, selector) => page.locator(selector).first().textContent();
const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
const statusHistory = (page) => page.evaluate(() => window.__status.slice());

/** Resolves with the time (ms) it took until the profits (or equity) shown differ from now. */
async function profitsMove(page, timeout) {
  const started = Date.now();
  const before = await page.evaluate(() =>
    [...document.querySelectorAll('#positions tbody td[data-f="profit"], #account dd[data-f="equity"]')]
      .map((e) => e.textContent)
      .join('|'),
  );
  await page.waitForFunction(
    (b) =>
      [...document.querySelectorAll('#positions tbody td[data-f="profit"], #account dd[data-f="equity"]')]
        .map((e) => e.textContent)
        .join('|') !== b,
    before,
    { timeout, polling: 50 },
  );
  return Date.now() - started;
}

/** Close a position of the demo trader through the admin ingest endpoint (a plugin's path). */
async function closeOneOurselves(admin, login) {
  const ts = Date.now();
  const src = `page-test-${ts}`;
  const position = 9_900_000_000 + (ts % 1_000_000);
  const deal = position + 1;
  const events = [
    { v: 1, type: 'position', op: 'open', src, seq: 1, ts, login, position_id: position, symbol: 'EURUSD',
      side: 'buy', vol: 10000, price_open: 1.08, digits: 5, contract_size: 100000 },
    { v: 1, type: 'deal', src, seq: 2, ts: ts + 1, login, deal, position_id: position, action: 'sell', entry: 'out',
      symbol: 'EURUSD', vol: 10000, price: 1.0805, digits: 5, contract_size: 100000, profit: 50 },
    { v: 1, type: 'position', op: 'close', src, seq: 3, ts: ts + 2, login, position_id: position, close_deal: deal,
      profit: 50 },
  ];
  const r = await fetch(`http://${admin}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  assert.equal(r.status, 200, `POST /v1/events: ${r.status} ${await r.text()}`);
  return deal;
}

// ------------------------------------------------------------------ the test

let browser;
after(async () => {
  await browser?.close().catch(() => {});
  killAll();
});

test('dashboard against tradecast demo: live trader, IB and risk views, reconnect after a restart', async (t) => {
  const started = Date.now();
  let server = await startDemo();
  const url = server.url;
  assert.equal(url, `http://${server.public}/`, 'the printed URL is the public listener');
  t.diagnostic(`demo printed ${url}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });

  const trader = await openPage(browser, url);
  const ib = await openPage(browser, url);
  const risk = await openPage(browser, url);
  let traderConnectedAt;

  await t.test('trader: one click, then account, positions and live profits that move', async () => {
    const { page } = trader;
    assert.equal(await page.locator('#view-empty').isVisible(), true, 'the welcome text before a token');
    const clicked = Date.now();
    await clickIdentity(page, 'client');
    traderConnectedAt = Date.now();
    await page.waitForSelector('#positions tbody tr[data-id]', { timeout: 5000 });
    assert.equal(await page.locator('#view-trader').isVisible(), true);
    assert.match(await text(page, '#whoami'), /^Trader \d+$/);
    assert.equal(await page.getAttribute('#identities button[data-role="client"]', 'aria-pressed'), 'true');
    assert.match(await text(page, '#account dd[data-f="balance"]'), /^[\d,]+\.\d\d$/);
    assert.match(await text(page, '#account dd[data-f="equity"]'), /^[\d,]+\.\d\d$/);
    assert.match(await text(page, '#account dd[data-f="margin_level"]'), /^[\d,]+\.\d\d %$|^—$/);
    // "Numbers move within a second" (live figures come every 250 ms per account).
    const took = await profitsMove(page, 1000);
    t.diagnostic(`trader: profits moved ${took} ms after the positions showed, ${Date.now() - clicked} ms after the click`);
    // And keep moving.
    await profitsMove(page, 3000);
    await page.waitForSelector('#prices .tile[data-symbol="EURUSD"] .bid', { timeout: 3000 });
  });

  await t.test('IB: one click, ledger totals and the network', async () => {
    const { page } = ib;
    await clickIdentity(page, 'ib');
    assert.equal(await page.locator('#view-ib').isVisible(), true);
    assert.match(await text(page, '#ib-title'), /^IB #\d+$/);
    await page.waitForSelector('#network li[data-client]', { timeout: 5000 });
    assert.ok(Number((await text(page, '#network-count')).replace(/,/g, '')) > 0, 'network members');
  });

  await t.test('risk: one click, exposure rows, sortable', async () => {
    const { page } = risk;
    await clickIdentity(page, 'admin');
    assert.equal(await page.locator('#view-risk').isVisible(), true);
    await page.waitForSelector('#exposure tbody tr[data-symbol]', { timeout: 5000 });
    const symbols = () => texts(page, '#exposure tbody tr td[data-f="symbol"]');
    await page.click('#exposure th[data-key="symbol"]');
    await page.waitForSelector('#exposure[data-sort-key="symbol"][data-sort-dir="asc"]');
    const asc = await symbols();
    assert.ok(asc.length > 1, 'several symbols');
    assert.deepEqual(asc, [...asc].sort(), 'sorted by symbol');
    await page.click('#exposure th[data-key="symbol"]');
    await page.waitForSelector('#exposure[data-sort-key="symbol"][data-sort-dir="desc"]');
    const desc = await symbols();
    assert.deepEqual(desc, [...desc].sort().reverse(), 'reversed');
    await page.click('#exposure th[data-key="notional_usd"]');
    await page.waitForSelector('#exposure[data-sort-key="notional_usd"][data-sort-dir="desc"] th[data-key="notional_usd"][aria-sort="descending"]');
    assert.match(await text(page, '#exposure tbody tr td[data-f="net_lots"]'), /^[+-]?[\d,.]+$/);
    assert.match(await text(page, '#ex-pl'), /^[+-]?[\d,]+\.\d\d$/);
  });

  await t.test('a closed position shows in the trader feed, its commission in the IB ticker', async () => {
    const closedDeal = (page) =>
      page.waitForSelector('#closed li[data-deal]', { timeout: Math.max(1, traderConnectedAt + SIMULATOR_CLOSE_WAIT_MS - Date.now()) })
        .then((li) => li.getAttribute('data-deal'));
    let deal;
    try {
      deal = await closedDeal(trader.page);
      t.diagnostic(`the simulator closed a position of the demo trader (deal ${deal}) ` +
        `${Date.now() - traderConnectedAt} ms after the trader connected`);
    } catch {
      // The demo's simulator trades at random on the wall clock: the demo trader (one of
      // twenty) may close nothing for a while. Close one the way a plugin would.
      const login = Number((await text(trader.page, '#whoami')).split(' ')[1]);
      deal = String(await closeOneOurselves(server.admin, login));
      t.diagnostic(`no close by the simulator in ${SIMULATOR_CLOSE_WAIT_MS} ms: closed deal ${deal} through POST /v1/events`);
      await trader.page.waitForSelector(`#closed li[data-deal="${deal}"]`, { timeout: 3000 });
    }
    const li = trader.page.locator(`#closed li[data-deal="${deal}"]`).first();
    assert.match(await li.textContent(), /(buy|sell) [\d.]+ [A-Z]+ +#\d+/);
    assert.notEqual(await text(trader.page, '#closed-count'), '0');
    // The same deal pays the IB (the demo IB is the top of the demo trader's chain).
    const login = (await text(trader.page, '#whoami')).split(' ')[1];
    const commission = ib.page.locator(`#commissions li[data-deal="${deal}"][data-client="${login}"]`);
    await commission.waitFor({ timeout: 5000 });
    assert.match(await commission.textContent(), /\+[\d,]+\.\d\d$/);
    await ib.page.waitForSelector(`#by-client tr[data-client="${login}"]`, { timeout: 2000 });
    await ib.page.waitForSelector('#by-level tr[data-level]', { timeout: 2000 });
    assert.notEqual(await text(ib.page, '#ib-total'), '0.00');
  });

  await t.test('a margin call reaches the risk desk\'s alerts', async () => {
    const { page } = risk;
    let selector = '#alerts li[data-kind]';
    if ((await page.locator(selector).count()) === 0) {
      // The simulator raises one every half a minute or so: raise one the way a plugin
      // would, for a trading client other than the demo trader (one the IB earned on,
      // else a founding member of the network), with only `op` and `login`: tradecast
      // fills in its own figures, as for the simulator's.
      const me = (await text(trader.page, '#whoami')).split(' ')[1];
      const clients = await ib.page.evaluate(() => [
        ...[...document.querySelectorAll('#commissions li[data-client]')].map((li) => li.dataset.client),
        ...[...document.querySelectorAll('#network li[data-client]')]
          .filter((li) => !li.querySelector('.joined'))
          .map((li) => li.dataset.client),
      ]);
      const login = Number(clients.find((c) => c.startsWith('1') && c !== me));
      const r = await fetch(`http://${server.admin}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ v: 1, type: 'margin_call', op: 'enter', src: `page-test-alert-${Date.now()}`, seq: 1, ts: Date.now(), login }),
      });
      assert.equal(r.status, 200, `POST /v1/events: ${r.status}`);
      selector = `#alerts li[data-kind="margin_call"][data-login="${login}"]`;
      t.diagnostic(`no alert from the simulator yet: posted a margin call for ${login}`);
    }
    await page.waitForSelector(selector, { timeout: 5000 });
    assert.match(await text(page, selector), /margin call|stop out|large deal/);
    assert.notEqual(await text(page, '#alerts-count'), '0');
  });

  await t.test('a client joining the IB\'s network shows as joined in the IB view', async () => {
    const { page } = ib;
    const me = Number((await text(page, '#ib-title')).replace(/^IB #/, ''));
    const before = Number((await text(page, '#network-count')).replace(/,/g, ''));
    // An ib_link as the plugin sends it when a new client signs up under this IB.
    const login = 880_000 + (Date.now() % 10_000);
    const r = await fetch(`http://${server.admin}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ v: 1, type: 'ib_link', op: 'set', src: `page-test-join-${Date.now()}`, seq: 1, ts: Date.now(), login, ib: me }),
    });
    assert.equal(r.status, 200, `POST /v1/events: ${r.status}`);
    const joined = `#network li[data-client="${login}"] .joined`;
    await page.waitForSelector(joined, { timeout: 5000 });
    assert.match(await text(page, joined), /^joined \d\d:\d\d/);
    assert.ok(Number((await text(page, '#network-count')).replace(/,/g, '')) > before, 'the network grew');
    assert.match(await text(page, '#joins-note'), /\b\d+ joined\b/);
  });

  await t.test('screenshots of the three views with live data', async () => {
    mkdirSync(SHOTS, { recursive: true });
    // A few more commissions make a livelier picture (at most until 15 s after the start).
    await ib.page
      .waitForFunction(() => document.querySelectorAll('#commissions li').length >= 6, null, {
        timeout: Math.max(1, started + 15000 - Date.now()),
      })
      .catch(() => {});
    // Let the "fresh" highlights fade.
    await trader.page.waitForTimeout(1300);
    for (const [name, { page }] of [['trader', trader], ['ib', ib], ['risk', risk]]) {
      await page.screenshot({ path: resolve(SHOTS, `${name}.png`) });
    }
    t.diagnostic(`saved ${SHOTS}/{trader,ib,risk}.png`);
  });

  await t.test('the node is killed and restarted on the same port: the page reconnects by itself', async () => {
    const pages = [trader, ib, risk];
    const marks = await Promise.all(pages.map(({ page }) => page.evaluate(() => window.__status.length)));
    await server.kill();
    for (const { page } of pages) {
      await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5000 });
    }
    // Node down: attempts fail and the indicator counts down to the next one.
    await trader.page.waitForFunction(
      (from) => window.__status.slice(from).some(([state, label]) => state === 'reconnecting' && /^reconnecting in \d+ s$/.test(label)),
      marks[0],
      { timeout: 5000 },
    );
    server = await startDemo(server.public);
    t.diagnostic(`restarted on ${server.public}`);
    // The restarted demo is a new broker (new epochs): every durable channel starts over.
    for (const { page } of pages) {
      await page.waitForSelector('#status[data-state="reset"]', { timeout: 20000 });
    }
    for (const [i, { page }] of pages.entries()) {
      const history = (await statusHistory(page)).slice(marks[i]);
      const states = history.map(([s]) => s);
      const down = states.indexOf('reconnecting');
      assert.ok(down >= 0, `reconnecting shown: ${JSON.stringify(history)}`);
      assert.ok(states.indexOf('reset', down) > down, `then reset: ${JSON.stringify(history)}`);
      assert.ok(!states.includes('closed'), `never gave up: ${JSON.stringify(history)}`);
    }
    t.diagnostic(`trader indicator: ${(await statusHistory(trader.page)).slice(marks[0]).map(([, s]) => s).join(' → ')}`);
    // Data flows again.
    await trader.page.waitForSelector('#positions tbody tr[data-id]', { timeout: 5000 });
    await profitsMove(trader.page, 3000);
    await risk.page.waitForSelector('#exposure tbody tr[data-symbol]', { timeout: 5000 });
    await ib.page.waitForSelector('#network li[data-client]', { timeout: 5000 });
    // The footer (refreshed once a second) shows the SDK's second connection.
    await trader.page.waitForFunction(() => /connections 2 /.test(document.querySelector('#stat-session').textContent), null, { timeout: 3000 });
  });

  await t.test('token entry: a refused token stops with "rejected", a pasted one connects', async () => {
    const { page, errors } = await openPage(browser, url);
    await page.fill('#token', 'not-a-token');
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="closed"][data-reason="rejected"]', { timeout: 10000 });
    assert.match(await text(page, '#status-text'), /rejected/);
    assert.equal(await page.locator('#view-empty').isVisible(), true);
    const identities = await (await fetch(`http://${server.public}/demo/identities`)).json();
    const admin = identities.find((i) => i.role === 'admin');
    await page.fill('#token', admin.token);
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
    await page.waitForSelector('#exposure tbody tr[data-symbol]', { timeout: 5000 });
    assert.equal(await page.getAttribute('#identities button[data-role="admin"]', 'aria-pressed'), 'true');
    // Another identity in the same page: the view follows.
    await clickIdentity(page, 'ib');
    assert.equal(await page.locator('#view-ib').isVisible(), true);
    assert.equal(await page.locator('#view-risk').isVisible(), false);
    // And back to a trader, twice: only the current session's rows are drawn.
    for (let i = 0; i < 2; i++) {
      await clickIdentity(page, 'client');
      await page.waitForSelector('#positions tbody tr[data-id]', { timeout: 5000 });
    }
    await page.waitForTimeout(300);
    const ids = await page.$$eval('#positions tbody tr', (trs) => trs.map((tr) => tr.dataset.id));
    assert.equal(new Set(ids).size, ids.length, `no row twice: ${ids}`);
    assert.equal(String(ids.length), await text(page, '#positions-count'));
    assert.equal(await page.locator('#exposure tbody tr').count(), 0, 'the risk rows of the first session are gone');
    assert.deepEqual(errors, []);
  });

  for (const [name, { errors }] of [['trader', trader], ['ib', ib], ['risk', risk]]) {
    assert.deepEqual(errors, [], `no page errors on the ${name} page`);
    assert.equal(await text((name === 'trader' ? trader : name === 'ib' ? ib : risk).page, '#stat-err'), '', `no error shown on the ${name} page`);
  }
  const took = Date.now() - started;
  t.diagnostic(`took ${took} ms`);
  assert.ok(took < 60000, `under a minute (${took} ms)`);
});
