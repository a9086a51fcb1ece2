// IB view (role `ib`): the commission ticker with running totals by level (exact: from
// the ledger snapshot, then every commission) and by client (from the snapshot's recent
// commissions plus every one since), and the network with clients joining and leaving.

import type {
  ClientJoinedMessage,
  ClientLeftMessage,
  CommissionBody,
  CommissionMessage,
  CommissionsFullMessage,
  NetworkFullMessage,
  TradecastClient,
} from 'tradecast-client';
import { $, el, setText, trim } from '../dom.js';
import { mark, unmark } from '../frame.js';
import { clock, int, lots, money } from '../format.js';

const TICKER_CAP = 100;
const NETWORK_CAP = 300;

interface ClientTotal {
  client: number;
  name: string;
  count: number;
  lots: number;
  amount: number;
}

interface Member {
  client: number;
  level: number;
  name: string | null;
  /** When it joined while the page was open. */
  joinedAt: number | null;
}

export class IbView {
  ib: number | null = null;
  total = 0;
  count = 0;
  readonly byLevel = new Map<number, number>();
  readonly byClient = new Map<number, ClientTotal>();
  /** How many of the by-client figures come from the snapshot's recent list. */
  private seededFrom = 0;
  readonly recent: CommissionBody[] = [];
  private recentNew: CommissionBody[] = [];
  private recentRebuild = true;
  readonly network = new Map<number, Member>();
  joins = 0;
  leaves = 0;
  private readonly offs: (() => void)[] = [];

  constructor(client: TradecastClient) {
    this.offs.push(
      client.on('commissions_full', (m) => this.onFull(m)),
      client.on('commission', (m) => this.onCommission(m)),
      client.on('network_full', (m) => this.onNetworkFull(m)),
      client.on('client_joined', (m) => this.onJoined(m)),
      client.on('client_left', (m) => this.onLeft(m)),
    );
    this.clear();
  }

  dispose(): void {
    for (const off of this.offs) off();
    this.offs.length = 0;
    unmark(this.renderTotals, this.renderClients, this.renderTicker, this.renderNetwork);
  }

  /** Redraw everything from this (empty) state: each part is drawn wholesale. */
  clear(): void {
    this.recentRebuild = true;
    mark(this.renderTotals);
    mark(this.renderClients);
    mark(this.renderTicker);
    mark(this.renderNetwork);
  }

  // -------------------------------------------------------------- state

  private onFull(m: CommissionsFullMessage): void {
    this.ib = m.ib;
    this.total = m.total;
    this.count = m.count;
    this.byLevel.clear();
    for (const [level, amount] of Object.entries(m.by_level ?? {})) this.byLevel.set(Number(level), amount);
    const recent = [...(m.recent ?? [])].sort((a, b) => b.ts - a.ts).slice(0, TICKER_CAP);
    this.recent.length = 0;
    this.recent.push(...recent);
    this.recentNew = [];
    this.recentRebuild = true;
    // The snapshot has totals by level but not by client: seed them from its recent list.
    this.byClient.clear();
    for (const c of recent) this.fold(c);
    this.seededFrom = recent.length;
    mark(this.renderTotals);
    mark(this.renderClients);
    mark(this.renderTicker);
  }

  private onCommission(m: CommissionMessage): void {
    this.total += m.amount;
    this.count++;
    this.byLevel.set(m.level, (this.byLevel.get(m.level) ?? 0) + m.amount);
    this.fold(m);
    this.recent.unshift(m);
    if (this.recent.length > TICKER_CAP) this.recent.length = TICKER_CAP;
    this.recentNew.push(m);
    mark(this.renderTotals);
    mark(this.renderClients);
    mark(this.renderTicker);
  }

  private fold(c: CommissionBody): void {
    let t = this.byClient.get(c.client);
    if (!t) {
      t = { client: c.client, name: '', count: 0, lots: 0, amount: 0 };
      this.byClient.set(c.client, t);
    }
    if (c.client_name) t.name = c.client_name;
    t.count++;
    t.lots += c.volume;
    t.amount += c.amount;
  }

  private onNetworkFull(m: NetworkFullMessage): void {
    this.ib = m.ib;
    const joined = new Map([...this.network].filter(([, v]) => v.joinedAt !== null));
    this.network.clear();
    for (const c of m.clients ?? []) {
      this.network.set(c.client, { ...c, joinedAt: joined.get(c.client)?.joinedAt ?? null });
    }
    mark(this.renderNetwork);
    mark(this.renderTotals);
  }

  private onJoined(m: ClientJoinedMessage): void {
    this.network.delete(m.client);
    this.network.set(m.client, { client: m.client, level: m.level, name: m.name, joinedAt: Date.now() });
    this.joins++;
    mark(this.renderNetwork);
    mark(this.renderTotals);
  }

  private onLeft(m: ClientLeftMessage): void {
    this.network.delete(m.client);
    this.leaves++;
    mark(this.renderNetwork);
    mark(this.renderTotals);
  }

  // -------------------------------------------------------------- renderers

  private readonly renderTotals = (): void => {
    setText($('#ib-total'), money(this.total));
    setText($('#ib-count'), int(this.count));
    setText($('#ib-clients'), int(this.network.size));
    setText($('#ib-title'), this.ib !== null ? 'IB #' + this.ib : '');
    const levels = [...this.byLevel.entries()].sort((a, b) => a[0] - b[0]);
    const sum = levels.reduce((s, [, v]) => s + v, 0) || 1;
    $('#by-level tbody').replaceChildren(
      ...levels.map(([level, amount]) => {
        const tr = el('tr');
        tr.dataset.level = String(level);
        const share = el('td', 'num bar', int((100 * amount) / sum) + ' %');
        share.style.setProperty('--w', ((100 * amount) / sum).toFixed(1) + '%');
        tr.append(el('td', '', 'Level ' + level), el('td', 'num', money(amount)), share);
        return tr;
      }),
    );
  };

  private readonly renderClients = (): void => {
    const rows = [...this.byClient.values()].sort((a, b) => b.amount - a.amount).slice(0, 100);
    $('#by-client tbody').replaceChildren(
      ...rows.map((r) => {
        const tr = el('tr');
        tr.dataset.client = String(r.client);
        tr.append(
          nameCell(el('td', 'ellipsis'), r.name, r.client),
          el('td', 'num', int(r.count)),
          el('td', 'num', lots(r.lots)),
          el('td', 'num pos', money(r.amount)),
        );
        return tr;
      }),
    );
    setText(
      $('#by-client-note'),
      this.seededFrom ? `live + ${this.seededFrom} earlier` : this.byClient.size ? 'since connect' : '',
    );
  };

  private readonly renderTicker = (): void => {
    const ul = $('#commissions');
    if (this.recentRebuild) {
      this.recentRebuild = false;
      this.recentNew = [];
      ul.replaceChildren(...this.recent.map((c) => tickerItem(c, false)));
    } else {
      const frag = document.createDocumentFragment();
      for (let i = this.recentNew.length - 1; i >= 0; i--) frag.append(tickerItem(this.recentNew[i]!, true));
      this.recentNew = [];
      ul.insertBefore(frag, ul.firstChild);
      trim(ul, TICKER_CAP);
    }
    $('#commissions-empty').hidden = this.recent.length > 0;
  };

  private readonly renderNetwork = (): void => {
    // Clients who joined while the page is open first (latest first), then by level.
    const members = [...this.network.values()].sort(
      (a, b) => (b.joinedAt ?? 0) - (a.joinedAt ?? 0) || a.level - b.level || a.client - b.client,
    );
    const items = members.slice(0, NETWORK_CAP).map((c) => {
      const li = el('li', c.joinedAt !== null && Date.now() - c.joinedAt < 1500 ? 'fresh' : '');
      li.dataset.client = String(c.client);
      li.append(
        nameCell(el('span', 'ellipsis'), c.name, c.client),
        el('span', c.joinedAt !== null ? 'joined' : 't', c.joinedAt !== null ? 'joined ' + clock(c.joinedAt) : ''),
        el('span', 'badge lvl', 'L' + c.level),
      );
      return li;
    });
    if (members.length > NETWORK_CAP) items.push(el('li', 'muted', `+${members.length - NETWORK_CAP} more`));
    $('#network').replaceChildren(...items);
    setText($('#network-count'), int(this.network.size));
    const notes = [];
    if (this.joins) notes.push(`${this.joins} joined`);
    if (this.leaves) notes.push(`${this.leaves} left`);
    setText($('#joins-note'), notes.length ? notes.join(' · ') + ' since connect' : '');
  };
}

/** `Ann Lee #42` with the login muted. */
function nameCell<T extends HTMLElement>(cell: T, name: string | null, login: number): T {
  cell.append((name || 'client') + ' ', el('span', 'login', '#' + login));
  cell.title = `${name ?? 'client'} #${login}`;
  return cell;
}

function tickerItem(c: CommissionBody, fresh: boolean): HTMLLIElement {
  const li = el('li', fresh ? 'fresh' : '');
  li.dataset.deal = String(c.deal);
  li.dataset.client = String(c.client);
  li.dataset.level = String(c.level);
  li.append(
    el('span', 't', clock(c.ts)),
    nameCell(el('span', 'ellipsis'), c.client_name, c.client),
    el('span', 'muted', c.symbol + ' ' + lots(c.volume)),
    el('span', 'badge lvl', 'L' + c.level),
    el('span', 'amt pos', '+' + money(c.amount)),
  );
  return li;
}
