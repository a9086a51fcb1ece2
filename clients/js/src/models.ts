// Local state models: each one applies a channel's snapshot and then its deltas, so the
// app reads a plain object that stays equal to what a fresh snapshot would say. Feed
// them from a TradecastClient (`attach`) or by hand (`apply`).

import { Emitter } from './emitter.js';
import type { TradecastClient } from './client.js';
import type {
  Account,
  AccountUpdateMessage,
  AlertMessage,
  ChannelMessage,
  ExposureMessage,
  ExposureRow,
  Order,
  OrderUpdateMessage,
  OrdersFullMessage,
  PortfolioFullMessage,
  Position,
  PositionClosedMessage,
  PositionOpenedMessage,
  PositionUpdateMessage,
  PriceMessage,
} from './types.js';

/** Fields of a channel message that are not part of the object it describes. */
const ENVELOPE = new Set(['type', 'channel', 'seq']);
const ACCOUNT_FIELDS = [
  'login', 'name', 'ccy', 'balance', 'credit', 'equity', 'margin', 'margin_free', 'margin_level', 'leverage',
] as const;

function body<T>(m: object, skip: Set<string> = ENVELOPE): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) if (!skip.has(k)) out[k] = v;
  return out as T;
}

export interface ModelEvents {
  /** The state changed (after a snapshot or a delta): re-render. */
  change: [message: ChannelMessage];
}

/** Common part: channel binding and the `change` event. */
abstract class Model extends Emitter<ModelEvents> {
  /** The channel this model follows; `null` until known (see each model). */
  channel: string | null;
  /** True once a snapshot has been applied. */
  ready = false;
  private detachFn: (() => void) | null = null;

  constructor(channel: string | null) {
    super();
    this.channel = channel;
  }

  /** Apply one channel message; returns true when the state changed. */
  apply(m: ChannelMessage): boolean {
    if (this.channel === null) {
      if (!this.claims(m)) return false;
      this.channel = m.channel;
    } else if (m.channel !== this.channel) {
      return false;
    }
    const changed = this.reduce(m);
    if (changed) this.emit('change', m);
    return changed;
  }

  /** Follow `client`'s messages (returns `this`). */
  attach(client: TradecastClient): this {
    this.detach();
    this.detachFn = client.on('message', (m) => this.apply(m));
    return this;
  }

  detach(): void {
    this.detachFn?.();
    this.detachFn = null;
  }

  /** Without a channel, the first message this returns true for binds the model. */
  protected abstract claims(m: ChannelMessage): boolean;
  protected abstract reduce(m: ChannelMessage): boolean;
}

/**
 * A trader's account and open positions with live profit (`portfolio:{login}`).
 * Applies `portfolio_full`, `position_opened`, `position_update` (only the fields it
 * carries), `position_closed` and `account_update` (durable: the whole account; live:
 * the moving figures).
 */
export class Portfolio extends Model {
  login: number | null = null;
  /** `null` until the node has seen the account. */
  account: Account | null = null;
  readonly positions = new Map<number, Position>();
  /** The latest margin-call / stop-out alert on this channel (`op: leave` clears it). */
  marginAlert: AlertMessage | null = null;

  /** `channel`: e.g. `portfolio:42`; omitted, the first `portfolio:` channel seen. */
  constructor(channel: string | null = null) {
    super(channel);
  }

  /** Sum of the open positions' floating profit. */
  get profit(): number {
    let sum = 0;
    for (const p of this.positions.values()) sum += p.profit ?? 0;
    return sum;
  }

  /** The state as a `portfolio_full` body would give it (positions sorted by id). */
  toJSON(): { login: number | null; account: Account | null; positions: Position[] } {
    return {
      login: this.login,
      account: this.account ? { ...this.account } : null,
      positions: [...this.positions.values()].sort((a, b) => a.id - b.id).map((p) => ({ ...p })),
    };
  }

  protected claims(m: ChannelMessage): boolean {
    return m.channel.startsWith('portfolio:');
  }

  protected reduce(m: ChannelMessage): boolean {
    switch (m.type) {
      case 'portfolio_full': {
        const full = m as PortfolioFullMessage;
        this.login = full.login ?? this.login;
        this.account = full.account ? { ...full.account } : null;
        this.positions.clear();
        for (const p of full.positions ?? []) this.positions.set(p.id, { ...p });
        this.ready = true;
        return true;
      }
      case 'position_opened': {
        const p = body<Position>(m as PositionOpenedMessage);
        this.positions.set(p.id, { ...this.positions.get(p.id), ...p });
        return true;
      }
      case 'position_update': {
        const u = m as PositionUpdateMessage;
        const p = this.positions.get(u.id);
        if (!p) return false; // unknown (already closed): the next snapshot has the truth
        Object.assign(p, body<Partial<Position>>(u));
        return true;
      }
      case 'position_closed':
        return this.positions.delete((m as PositionClosedMessage).id);
      case 'account_update': {
        const a = m as AccountUpdateMessage;
        // A live update (no seq) carries only the moving figures: it needs an account.
        if (!this.account && typeof a.seq !== 'number') return false;
        const next: Record<string, unknown> = { ...this.account };
        for (const f of ACCOUNT_FIELDS) if (a[f] !== undefined) next[f] = a[f];
        this.account = next as unknown as Account;
        return true;
      }
      case 'alert': {
        const alert = m as AlertMessage;
        if (alert.kind !== 'margin_call' && alert.kind !== 'stop_out') return false;
        this.marginAlert = alert.op === 'leave' ? null : alert;
        return true;
      }
    }
    return false;
  }
}

/** A trader's working orders (`orders:{login}`): `orders_full`, then `order_update`. */
export class Orders extends Model {
  login: number | null = null;
  readonly orders = new Map<number, Order>();

  /** `channel`: e.g. `orders:42`; omitted, the first `orders:` channel seen. */
  constructor(channel: string | null = null) {
    super(channel);
  }

  toJSON(): Order[] {
    return [...this.orders.values()].sort((a, b) => a.id - b.id).map((o) => ({ ...o }));
  }

  protected claims(m: ChannelMessage): boolean {
    return m.channel.startsWith('orders:');
  }

  protected reduce(m: ChannelMessage): boolean {
    if (m.type === 'orders_full') {
      const full = m as OrdersFullMessage;
      this.login = full.login ?? this.login;
      this.orders.clear();
      for (const o of full.orders ?? []) this.orders.set(o.id, { ...o });
      this.ready = true;
      return true;
    }
    if (m.type === 'order_update') {
      const u = m as OrderUpdateMessage;
      if (u.op === 'delete') return this.orders.delete(u.id);
      this.orders.set(u.id, body<Order>(u, new Set([...ENVELOPE, 'op'])));
      return true;
    }
    return false;
  }
}

/** Net exposure per symbol across all clients (`exposure`, admins): the table is the state. */
export class Exposure extends Model {
  readonly symbols = new Map<string, ExposureRow>();

  constructor(channel: string | null = 'exposure') {
    super(channel);
  }

  toJSON(): ExposureRow[] {
    return [...this.symbols.values()].sort((a, b) => (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0));
  }

  protected claims(m: ChannelMessage): boolean {
    return m.channel === 'exposure';
  }

  protected reduce(m: ChannelMessage): boolean {
    if (m.type !== 'exposure') return false;
    this.symbols.clear();
    for (const row of (m as ExposureMessage).symbols ?? []) this.symbols.set(row.symbol, { ...row });
    this.ready = true;
    return true;
  }
}

/** Last bid/ask per symbol of a price group (`prices:{group}`). */
export class Prices extends Model {
  readonly quotes = new Map<string, PriceMessage>();

  /** `channel`: e.g. `prices:forex`; omitted, the first `prices:` channel seen. */
  constructor(channel: string | null = null) {
    super(channel);
  }

  protected claims(m: ChannelMessage): boolean {
    return m.channel.startsWith('prices:');
  }

  protected reduce(m: ChannelMessage): boolean {
    if (m.type !== 'price') return false;
    const p = m as PriceMessage;
    this.quotes.set(p.symbol, p);
    this.ready = true;
    return true;
  }
}
