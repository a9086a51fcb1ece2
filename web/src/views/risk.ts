// Risk view (role `admin`): net exposure per symbol (the SDK's Exposure model), sortable
// by any column, and the alerts list (margin calls, stop outs, large deals).

import { Exposure } from 'tradecast-client';
import type { AlertBody, AlertMessage, AlertsFullMessage, ExposureRow, TradecastClient } from 'tradecast-client';
import { $, el, setClass, setData, setText, trim } from '../dom.js';
import { mark, unmark } from '../frame.js';
import { clock, int, intSigned, isNum, lots, lotsSigned, money, pnlClass, signed } from '../format.js';

const ALERTS_CAP = 100;

export type SortKey = keyof ExposureRow;

const COLUMNS: SortKey[] = ['symbol', 'buy_lots', 'sell_lots', 'net_lots', 'notional', 'notional_usd', 'positions', 'profit'];

/**
 * One line describing an alert, e.g. `margin call enter · #100004 · ML 87.10 % · equity
 * 870.00` (without the kind when a badge shows it: `enter · #100004 · …`).
 */
export function describeAlert(a: AlertBody, withKind = true): string {
  const parts: string[] = [];
  const what = (withKind ? String(a.kind).replace(/_/g, ' ') + ' ' : '') + (a.op ?? '');
  if (what.trim()) parts.push(what.trim());
  if (a.login != null) parts.push('#' + a.login);
  if (a.symbol) parts.push(a.symbol);
  if (isNum(a.volume)) parts.push(lots(a.volume) + ' lots');
  if (isNum(a.margin_level)) parts.push('ML ' + money(a.margin_level) + ' %');
  if (isNum(a.equity)) parts.push('equity ' + money(a.equity));
  if (isNum(a.margin)) parts.push('margin ' + money(a.margin));
  if (a.deal != null) parts.push('deal ' + a.deal);
  return parts.join(' · ');
}

interface Row {
  tr: HTMLTableRowElement;
  cells: Record<string, HTMLTableCellElement>;
  /** Last bar width and colour written (style writes only when they change). */
  w: string;
  nb: string;
}

export class RiskView {
  readonly exposure = new Exposure();
  sortKey: SortKey = 'notional_usd';
  sortDir: 1 | -1 = -1;
  private updatedAt = 0;
  readonly alerts: AlertBody[] = [];
  private alertsNew: AlertBody[] = [];
  private alertsRebuild = true;
  private readonly rows = new Map<string, Row>();
  private readonly offs: (() => void)[] = [];

  constructor(client: TradecastClient) {
    this.exposure.attach(client);
    this.offs.push(
      () => this.exposure.detach(),
      this.exposure.on('change', () => {
        this.updatedAt = Date.now();
        mark(this.renderExposure);
      }),
      client.on('alerts_full', (m) => this.onAlertsFull(m)),
      client.on('alert', (m) => this.onAlert(m)),
    );
    this.clear();
  }

  dispose(): void {
    for (const off of this.offs) off();
    this.offs.length = 0;
    unmark(this.renderExposure, this.renderAlerts, this.renderAge);
  }

  /** Empty the view's DOM (a new session: whatever an earlier one drew goes). */
  clear(): void {
    this.rows.clear();
    $('#exposure tbody').replaceChildren();
    $('#alerts').replaceChildren();
    this.alertsRebuild = true;
    mark(this.renderExposure);
    mark(this.renderAlerts);
  }

  /** A click on a column header: sort by it, or flip the direction. */
  sortBy(key: SortKey): void {
    if (this.sortKey === key) this.sortDir = this.sortDir === 1 ? -1 : 1;
    else {
      this.sortKey = key;
      this.sortDir = key === 'symbol' ? 1 : -1;
    }
    mark(this.renderExposure);
  }

  /** Once a second: the "updated hh:mm:ss" note. */
  tick(): void {
    if (this.updatedAt) mark(this.renderAge);
  }

  private readonly renderAge = (): void => {
    setText($('#exposure-age'), 'updated ' + clock(this.updatedAt));
  };

  private onAlertsFull(m: AlertsFullMessage): void {
    if (m.channel !== 'alerts') return;
    this.alerts.length = 0;
    this.alerts.push(...[...(m.recent ?? [])].sort((a, b) => b.ts - a.ts).slice(0, ALERTS_CAP));
    this.alertsNew = [];
    this.alertsRebuild = true;
    mark(this.renderAlerts);
  }

  private onAlert(m: AlertMessage): void {
    if (m.channel !== 'alerts') return;
    this.alerts.unshift(m);
    if (this.alerts.length > ALERTS_CAP) this.alerts.length = ALERTS_CAP;
    this.alertsNew.push(m);
    mark(this.renderAlerts);
  }

  private readonly renderExposure = (): void => {
    const tbody = $('#exposure tbody');
    const key = this.sortKey;
    const dir = this.sortDir;
    const list = [...this.exposure.symbols.values()].sort((a, b) => {
      const x = a[key];
      const y = b[key];
      const c =
        typeof x === 'string' || typeof y === 'string'
          ? String(x ?? '').localeCompare(String(y ?? ''))
          : (x ?? -Infinity) - (y ?? -Infinity);
      return c * dir || a.symbol.localeCompare(b.symbol);
    });
    for (const [symbol, row] of this.rows) {
      if (!this.exposure.symbols.has(symbol)) {
        row.tr.remove();
        this.rows.delete(symbol);
      }
    }
    let maxUsd = 0;
    for (const s of list) maxUsd = Math.max(maxUsd, Math.abs(s.notional_usd ?? 0));
    const tot = { buy: 0, sell: 0, net: 0, usd: 0, pos: 0, pl: 0 };
    let prev: Element | null = null;
    for (const s of list) {
      let row = this.rows.get(s.symbol);
      if (!row) {
        const tr = el('tr');
        tr.dataset.symbol = s.symbol;
        const cells: Record<string, HTMLTableCellElement> = {};
        for (const f of COLUMNS) {
          const td = el('td', f === 'symbol' ? 'sym' : 'num');
          td.dataset.f = f;
          cells[f] = td;
          tr.append(td);
        }
        row = { tr, cells, w: '', nb: '' };
        this.rows.set(s.symbol, row);
      }
      const c = row.cells;
      setText(c.symbol!, s.symbol);
      setText(c.buy_lots!, lots(s.buy_lots));
      setText(c.sell_lots!, lots(s.sell_lots));
      setText(c.net_lots!, lotsSigned(s.net_lots));
      setClass(c.net_lots!, 'num ' + pnlClass(s.net_lots));
      setText(c.notional!, intSigned(s.notional));
      setText(c.notional_usd!, intSigned(s.notional_usd));
      setClass(c.notional_usd!, 'num netbar');
      const usd = s.notional_usd ?? 0;
      const w = maxUsd ? ((100 * Math.abs(usd)) / maxUsd).toFixed(1) + '%' : '0%';
      const nb = usd >= 0 ? 'rgba(39,194,129,.16)' : 'rgba(255,93,93,.16)';
      if (row.w !== w) c.notional_usd!.style.setProperty('--w', (row.w = w));
      if (row.nb !== nb) c.notional_usd!.style.setProperty('--nb', (row.nb = nb));
      setText(c.positions!, int(s.positions));
      setText(c.profit!, signed(s.profit));
      setClass(c.profit!, 'num ' + pnlClass(s.profit));
      const want: ChildNode | null = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      prev = row.tr;
      tot.buy += s.buy_lots;
      tot.sell += s.sell_lots;
      tot.net += s.net_lots;
      tot.usd += usd;
      tot.pos += s.positions;
      tot.pl += s.profit;
    }
    setText($('#ex-buy'), lots(tot.buy));
    setText($('#ex-sell'), lots(tot.sell));
    setText($('#ex-net'), lotsSigned(tot.net));
    setText($('#ex-usd'), intSigned(tot.usd));
    setText($('#ex-pos'), int(tot.pos));
    setText($('#ex-pl'), signed(tot.pl));
    setClass($('#ex-pl'), 'num ' + pnlClass(tot.pl));
    setText($('#exposure-count'), String(list.length));
    const table = $('#exposure');
    setData(table, 'sortKey', key);
    setData(table, 'sortDir', dir > 0 ? 'asc' : 'desc');
    for (const th of table.querySelectorAll<HTMLElement>('th[data-key]')) {
      const sort = th.dataset.key === key ? (dir > 0 ? 'ascending' : 'descending') : null;
      if (sort) th.setAttribute('aria-sort', sort);
      else th.removeAttribute('aria-sort');
    }
  };

  private readonly renderAlerts = (): void => {
    const ul = $('#alerts');
    if (this.alertsRebuild) {
      this.alertsRebuild = false;
      this.alertsNew = [];
      ul.replaceChildren(...this.alerts.map((a) => alertItem(a, false)));
    } else {
      const frag = document.createDocumentFragment();
      for (let i = this.alertsNew.length - 1; i >= 0; i--) frag.append(alertItem(this.alertsNew[i]!, true));
      this.alertsNew = [];
      ul.insertBefore(frag, ul.firstChild);
      trim(ul, ALERTS_CAP);
    }
    setText($('#alerts-count'), String(this.alerts.length));
    $('#alerts-empty').hidden = this.alerts.length > 0;
  };
}

function alertItem(a: AlertBody, fresh: boolean): HTMLLIElement {
  const li = el('li', fresh ? 'fresh' : '');
  li.dataset.kind = String(a.kind);
  li.dataset.login = String(a.login);
  li.append(
    el('span', 't', clock(a.ts)),
    el('span', 'badge ' + a.kind, String(a.kind).replace(/_/g, ' ') + (a.op === 'leave' ? ' ✓' : '')),
    el('span', 'what', describeAlert(a, false)),
  );
  return li;
}
