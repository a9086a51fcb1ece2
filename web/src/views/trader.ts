// Trader view (role `client`): account, open positions with live profit, prices,
// pending orders, and the feed of trades closed while the page is open.
//
// State lives in the SDK's models (Portfolio, Orders) and in the feeds below; SDK events
// only change state and mark renderers, which run once per animation frame.

import { Orders, Portfolio } from 'tradecast-client';
import type {
  AlertMessage,
  ChannelMessage,
  Position,
  PositionClosedMessage,
  PositionUpdateMessage,
  PriceMessage,
  TradecastClient,
} from 'tradecast-client';
import { $, el, setClass, setData, setText, trim } from '../dom.js';
import { mark, unmark } from '../frame.js';
import {
  clock, isNum, lots, money, percent, pnlClass, price, setDigits, signed, spreadPoints,
} from '../format.js';
import { describeAlert } from './risk.js';

const CLOSED_CAP = 50;
const ALERTS_CAP = 6;

/** One line of the closed-trade feed. */
export interface ClosedTrade {
  /** Position ticket. */
  id: number;
  /** The closing deal's ticket (the IB's commission carries the same), when known. */
  deal: number | null;
  kind: 'close' | 'partial';
  symbol: string;
  side: string;
  volume: number;
  profit: number | null;
  at: number;
}

interface Quote {
  bid: number;
  ask: number;
  dir: number;
}

interface PositionRow {
  tr: HTMLTableRowElement;
  cells: Record<string, HTMLTableCellElement>;
  profit: number | null;
}

const POS_COLS: [keyof Position, string][] = [
  ['id', ''], ['symbol', ''], ['side', ''], ['volume', 'num'], ['price_open', 'num'], ['price', 'num'],
  ['sl', 'num'], ['tp', 'num'], ['swap', 'num'], ['profit', 'num profit'],
];

export class TraderView {
  readonly portfolio = new Portfolio();
  readonly orders = new Orders();
  readonly quotes = new Map<string, Quote>();
  readonly closed: ClosedTrade[] = [];
  private closedNew: ClosedTrade[] = [];
  private realised = 0;
  private readonly alerts: AlertMessage[] = [];
  /** The last durable trade `account_update` (a partial close's money comes just before it). */
  private lastTrade: { seq: number; deal: number; amount: number } | null = null;
  private readonly rows = new Map<number, PositionRow>();
  private readonly dirtyRows = new Set<number>();
  private structure = true;
  private readonly tiles = new Map<string, { tile: HTMLElement; bid: HTMLElement; ask: HTMLElement; spr: HTMLElement }>();
  private readonly dirtyQuotes = new Set<string>();
  private tilesStructure = true;
  private readonly offs: (() => void)[] = [];

  constructor(client: TradecastClient) {
    // Registered before the models attach, so it sees a position before its update applies.
    this.offs.push(client.on('message', (m) => this.beforeModels(m)));
    this.portfolio.attach(client);
    this.orders.attach(client);
    this.offs.push(
      () => this.portfolio.detach(),
      () => this.orders.detach(),
      this.portfolio.on('change', (m) => this.onPortfolio(m)),
      this.orders.on('change', () => mark(this.renderOrders)),
      client.on('price', (m) => this.onPrice(m)),
    );
    this.clear();
  }

  dispose(): void {
    for (const off of this.offs) off();
    this.offs.length = 0;
    unmark(this.renderPositions, this.renderAccount, this.renderOrders, this.renderPrices, this.renderClosed, this.renderAlerts);
  }

  /** Empty the view's DOM (a new session: whatever an earlier one drew goes). */
  clear(): void {
    this.rows.clear();
    this.tiles.clear();
    $('#positions tbody').replaceChildren();
    $('#prices').replaceChildren();
    $('#closed').replaceChildren();
    $('#trader-alerts').replaceChildren();
    this.structure = this.tilesStructure = true;
    for (const r of [this.renderPositions, this.renderAccount, this.renderOrders, this.renderPrices, this.renderClosed, this.renderAlerts]) {
      mark(r);
    }
  }

  // -------------------------------------------------------------- state

  private beforeModels(m: ChannelMessage): void {
    if (!m.channel.startsWith('portfolio:') || m.channel !== (this.portfolio.channel ?? m.channel)) return;
    const raw = (m as { seq?: unknown }).seq;
    const seq = typeof raw === 'number' ? raw : null;
    if (m.type === 'account_update' && seq !== null) {
      const a = m as { kind?: string; deal?: number; amount?: number };
      this.lastTrade =
        (a.kind === 'buy' || a.kind === 'sell') && isNum(a.deal) ? { seq, deal: a.deal, amount: a.amount ?? 0 } : null;
    } else if (m.type === 'position_update' && seq !== null) {
      const u = m as PositionUpdateMessage;
      const held = this.portfolio.positions.get(u.id);
      if (held && isNum(u.volume) && u.volume < held.volume) {
        // A partial close: the trade server reports the remaining volume.
        const money = this.lastTrade && this.lastTrade.seq === seq - 1 ? this.lastTrade : null;
        this.addClosed({
          id: u.id, deal: money?.deal ?? null, kind: 'partial', symbol: held.symbol, side: held.side,
          volume: Math.round((held.volume - u.volume) * 1e4) / 1e4, profit: money?.amount ?? null, at: Date.now(),
        });
      }
    } else if (m.type === 'position_closed') {
      const c = m as PositionClosedMessage;
      this.addClosed({
        id: c.id, deal: c.close_deal ?? null, kind: 'close', symbol: c.symbol, side: c.side,
        volume: c.volume, profit: isNum(c.profit) ? c.profit : null, at: Date.now(),
      });
    } else if (m.type === 'alert') {
      this.alerts.unshift(m as AlertMessage);
      this.alerts.length = Math.min(this.alerts.length, ALERTS_CAP);
      mark(this.renderAlerts);
      mark(this.renderAccount);
    }
  }

  private addClosed(item: ClosedTrade): void {
    this.closed.unshift(item);
    this.closedNew.push(item);
    if (isNum(item.profit)) this.realised += item.profit;
    if (this.closed.length > CLOSED_CAP) this.closed.length = CLOSED_CAP;
    mark(this.renderClosed);
  }

  private onPortfolio(m: ChannelMessage): void {
    switch (m.type) {
      case 'position_update':
        this.dirtyRows.add((m as PositionUpdateMessage).id);
        break;
      case 'account_update':
      case 'alert':
        break;
      default: // portfolio_full, position_opened, position_closed
        this.structure = true;
    }
    mark(this.renderPositions);
    mark(this.renderAccount);
  }

  private onPrice(m: PriceMessage): void {
    setDigits(m.symbol, m.digits);
    let q = this.quotes.get(m.symbol);
    if (!q) {
      q = { bid: m.bid, ask: m.ask, dir: 0 };
      this.quotes.set(m.symbol, q);
      this.tilesStructure = true;
    } else if (m.bid !== q.bid) {
      q.dir = m.bid > q.bid ? 1 : -1;
    }
    q.bid = m.bid;
    q.ask = m.ask;
    this.dirtyQuotes.add(m.symbol);
    mark(this.renderPrices);
  }

  // -------------------------------------------------------------- renderers

  private readonly renderPositions = (): void => {
    const tbody = $('#positions tbody');
    const positions = this.portfolio.positions;
    if (this.structure) {
      this.structure = false;
      for (const [id, row] of this.rows) {
        if (!positions.has(id)) {
          row.tr.remove();
          this.rows.delete(id);
        }
      }
      let prev: Element | null = null;
      const sorted = [...positions.values()].sort((a, b) => a.id - b.id);
      for (const p of sorted) {
        let row = this.rows.get(p.id);
        if (!row) {
          row = newRow(p);
          this.rows.set(p.id, row);
          this.dirtyRows.add(p.id);
        }
        const want: ChildNode | null = prev ? prev.nextSibling : tbody.firstChild;
        if (want !== row.tr) tbody.insertBefore(row.tr, want);
        prev = row.tr;
      }
      setText($('#positions-count'), String(positions.size));
      $('#positions-empty').hidden = positions.size > 0;
    }
    for (const id of this.dirtyRows) {
      const row = this.rows.get(id);
      const p = positions.get(id);
      if (row && p) fillRow(row, p);
    }
    this.dirtyRows.clear();
    const pl = this.floating();
    const plEl = $('#positions-pl');
    setText(plEl, positions.size ? signed(pl) : '—');
    setClass(plEl, pnlClass(pl));
  };

  private floating(): number {
    let sum = 0;
    for (const p of this.portfolio.positions.values()) sum += (p.profit ?? 0) + (p.swap ?? 0);
    return sum;
  }

  private readonly renderAccount = (): void => {
    const a = this.portfolio.account;
    const dd = (f: string) => $(`#account dd[data-f="${f}"]`);
    setText(dd('equity'), money(a?.equity));
    setText(dd('balance'), money(a?.balance));
    setText(dd('credit'), money(a?.credit));
    const floating = a || this.portfolio.positions.size ? this.floating() : null;
    setText(dd('floating'), signed(floating));
    setClass(dd('floating'), pnlClass(floating));
    setText(dd('margin'), money(a?.margin));
    setText(dd('margin_free'), money(a?.margin_free));
    const ml = a?.margin_level;
    setText(dd('margin_level'), isNum(ml) && (a?.margin ?? 0) > 0 ? percent(ml) : '—');
    setClass(dd('margin_level'), isNum(ml) ? (ml < 100 ? 'ml-bad' : ml < 200 ? 'ml-warn' : '') : '');
    setText(dd('leverage'), isNum(a?.leverage) ? '1:' + a!.leverage : '—');
    const login = a?.login ?? this.portfolio.login;
    const title = [a?.name, login != null ? '#' + login : null].filter(Boolean).join(' · ');
    setText($('#acct-title'), title + (a?.ccy ? ' ' + a.ccy : ''));
    const alert = this.portfolio.marginAlert;
    setClass($('#account-card'), 'card' + (alert ? (alert.kind === 'stop_out' ? ' stop-out' : ' margin-call') : ''));
  };

  private readonly renderOrders = (): void => {
    const list = this.orders.toJSON();
    $('#orders tbody').replaceChildren(
      ...list.map((o) => {
        const tr = el('tr');
        tr.dataset.id = String(o.id);
        const side = /buy/.test(o.order_type) ? 'side-buy' : /sell/.test(o.order_type) ? 'side-sell' : '';
        tr.append(
          el('td', '', String(o.id)),
          el('td', '', o.symbol),
          el('td', side, o.order_type.replace(/_/g, ' ')),
          el('td', 'muted', o.state),
          el('td', 'num', lots(o.volume)),
          el('td', 'num', price(o.symbol, o.price ?? o.price_trigger)),
        );
        return tr;
      }),
    );
    setText($('#orders-count'), String(list.length));
    $('#orders-empty').hidden = list.length > 0;
  };

  private readonly renderPrices = (): void => {
    const box = $('#prices');
    if (this.tilesStructure) {
      this.tilesStructure = false;
      for (const symbol of [...this.quotes.keys()].sort()) {
        let t = this.tiles.get(symbol);
        if (!t) {
          const tile = el('div', 'tile');
          tile.dataset.symbol = symbol;
          const head = el('div', 'sym', symbol);
          const spr = el('span', 'spr');
          head.append(spr);
          const q = el('div', 'q');
          const bid = el('span', 'bid');
          const ask = el('span', 'ask');
          q.append(bid, ask);
          tile.append(head, q);
          t = { tile, bid, ask, spr };
          this.tiles.set(symbol, t);
          this.dirtyQuotes.add(symbol);
        }
        box.append(t.tile); // appending in sorted order keeps them sorted
      }
      setText($('#prices-count'), String(this.quotes.size));
    }
    for (const symbol of this.dirtyQuotes) {
      const t = this.tiles.get(symbol);
      const q = this.quotes.get(symbol);
      if (!t || !q) continue;
      setText(t.bid, price(symbol, q.bid));
      setText(t.ask, price(symbol, q.ask));
      const cls = q.dir > 0 ? 'up' : q.dir < 0 ? 'down' : '';
      setClass(t.bid, 'bid ' + cls);
      setClass(t.ask, 'ask ' + cls);
      setText(t.spr, spreadPoints(symbol, q.bid, q.ask));
    }
    this.dirtyQuotes.clear();
  };

  private readonly renderClosed = (): void => {
    const ul = $('#closed');
    const frag = document.createDocumentFragment();
    for (let i = this.closedNew.length - 1; i >= 0; i--) frag.append(closedItem(this.closedNew[i]!));
    this.closedNew = [];
    ul.insertBefore(frag, ul.firstChild);
    trim(ul, CLOSED_CAP);
    setText($('#closed-count'), String(this.closed.length));
    const pl = $('#closed-pl');
    setText(pl, this.closed.length ? signed(this.realised) : '—');
    setClass(pl, pnlClass(this.realised));
    $('#closed-empty').hidden = this.closed.length > 0;
  };

  private readonly renderAlerts = (): void => {
    $('#trader-alerts').replaceChildren(...this.alerts.map((a) => el('li', '', clock(a.ts) + '  ' + describeAlert(a))));
  };
}

function newRow(p: Position): PositionRow {
  const tr = el('tr');
  tr.dataset.id = String(p.id);
  const cells: Record<string, HTMLTableCellElement> = {};
  for (const [f, cls] of POS_COLS) {
    const td = el('td', cls);
    td.dataset.f = f;
    cells[f] = td;
    tr.append(td);
  }
  return { tr, cells, profit: null };
}

function fillRow(row: PositionRow, p: Position): void {
  const c = row.cells;
  setText(c.id!, String(p.id));
  setText(c.symbol!, p.symbol);
  setText(c.side!, p.side);
  setClass(c.side!, p.side === 'buy' ? 'side-buy' : p.side === 'sell' ? 'side-sell' : '');
  setText(c.volume!, lots(p.volume));
  setText(c.price_open!, price(p.symbol, p.price_open));
  setText(c.price!, price(p.symbol, p.price));
  setText(c.sl!, price(p.symbol, p.sl));
  setText(c.tp!, price(p.symbol, p.tp));
  setText(c.swap!, money(p.swap));
  setText(c.profit!, signed(p.profit));
  setClass(c.profit!, 'num profit ' + pnlClass(p.profit));
  if (isNum(row.profit) && isNum(p.profit) && p.profit !== row.profit) {
    // Flash the cell: alternate two animation names so a new flash restarts it.
    const cur = c.profit!.dataset.flash ?? '';
    c.profit!.dataset.flash = p.profit > row.profit ? (cur === 'u1' ? 'u2' : 'u1') : cur === 'd1' ? 'd2' : 'd1';
  }
  row.profit = isNum(p.profit) ? p.profit : null;
}

function closedItem(c: ClosedTrade): HTMLLIElement {
  const li = el('li', 'fresh');
  li.dataset.id = String(c.id);
  li.dataset.kind = c.kind;
  if (c.deal !== null) li.dataset.deal = String(c.deal);
  const what = el('span', 'ellipsis');
  what.append(
    el('span', c.side === 'buy' ? 'side-buy' : 'side-sell', c.side),
    ' ' + lots(c.volume) + ' ' + c.symbol + '  #' + c.id + ' ',
  );
  if (c.kind === 'partial') what.append(el('span', 'badge partial', 'partial'));
  li.append(el('span', 't', clock(c.at)), what, el('span', 'amt ' + pnlClass(c.profit), signed(c.profit)));
  setData(li, 'profit', isNum(c.profit) ? String(c.profit) : '');
  return li;
}
