// Wire types of the tradecast protocol (docs/protocol.md). Every server message is a
// flat JSON object with a `type`; channel messages also carry `channel`, and durable ones
// a contiguous per-channel `seq`. Unknown fields and types are forward-compatible
// additions: they are passed through untouched.

/** `client` (trader), `ib` (introducing broker) or `admin` (risk manager). */
export type Role = 'client' | 'ib' | 'admin';

/** A resume position: the last durable message applied on a channel. */
export interface Since {
  epoch: string;
  seq: number;
}

// ------------------------------------------------------------------ control messages

export interface WelcomeMessage {
  type: 'welcome';
  user: number;
  role: Role;
  heartbeat_ms: number;
  channels: string[];
}

export interface SubscribedMessage {
  type: 'subscribed';
  /** Echo of the request id; absent when the server subscribed by itself. */
  id?: string | number;
  channel: string;
  epoch: string;
  seq: number;
  recovered: boolean;
}

export interface UnsubscribedMessage {
  type: 'unsubscribed';
  id?: string | number;
  channel: string;
}

export type ErrorCode =
  | 'bad_request'
  | 'unknown_type'
  | 'bad_field'
  | 'binary_frame'
  | 'invalid_channel'
  | 'forbidden'
  | 'not_subscribed'
  | 'too_many_subscriptions'
  | 'unavailable'
  | (string & {});

export interface ErrorMessage {
  type: 'error';
  id?: string | number;
  code: ErrorCode;
  message: string;
  channel?: string;
}

export interface PongMessage {
  type: 'pong';
  id?: string | number;
}

export interface ReconnectMessage {
  type: 'reconnect';
  after_ms: number;
}

// ------------------------------------------------------------------ portfolio:{login}

export interface Account {
  login: number;
  name: string;
  ccy: string;
  balance: number;
  credit: number;
  equity: number;
  margin: number;
  margin_free: number;
  /** Percent; `null` when no margin is in use. */
  margin_level: number | null;
  leverage: number;
}

export interface Position {
  id: number;
  symbol: string;
  side: 'buy' | 'sell';
  /** Lots. */
  volume: number;
  price_open: number;
  sl: number | null;
  tp: number | null;
  swap: number;
  /** Live floating profit in the account currency. */
  profit: number;
  /** Current mark. */
  price: number;
  /** Open time, ms since 1970 UTC. */
  time: number;
}

export interface PortfolioFullMessage {
  type: 'portfolio_full';
  channel: string;
  login: number;
  account: Account | null;
  positions: Position[];
}

export interface PositionOpenedMessage extends Position {
  type: 'position_opened';
  channel: string;
  seq: number;
}

/**
 * Durable (with `seq`: only the changed fields among volume, price_open, sl, tp, swap)
 * or live (without `seq`: profit and price).
 */
export interface PositionUpdateMessage extends Partial<Omit<Position, 'id'>> {
  type: 'position_update';
  channel: string;
  id: number;
  seq?: number;
}

export interface PositionClosedMessage {
  type: 'position_closed';
  channel: string;
  id: number;
  symbol: string;
  side: 'buy' | 'sell';
  volume: number;
  /** Final profit of the closing deal when known. */
  profit: number;
  close_deal?: number | null;
  seq: number;
}

/**
 * Durable (with `seq`: the whole account, plus kind/amount/deal when a deal caused it)
 * or live (without `seq`: equity, margin, margin_free, margin_level).
 */
export interface AccountUpdateMessage extends Partial<Account> {
  type: 'account_update';
  channel: string;
  kind?: string;
  amount?: number;
  deal?: number;
  seq?: number;
}

export interface AlertBody {
  kind: 'margin_call' | 'stop_out' | 'large_deal' | (string & {});
  op?: 'enter' | 'leave';
  login: number;
  equity?: number;
  margin?: number;
  margin_level?: number | null;
  symbol?: string;
  volume?: number;
  deal?: number;
  ts: number;
}

/** On `alerts` (admins) and, for margin calls and stop outs, on `portfolio:{login}`. */
export interface AlertMessage extends AlertBody {
  type: 'alert';
  channel: string;
  seq: number;
}

// ------------------------------------------------------------------ orders:{login}

export interface Order {
  id: number;
  symbol: string;
  order_type: string;
  state: string;
  volume: number;
  volume_initial: number;
  price: number | null;
  price_trigger: number | null;
  sl: number | null;
  tp: number | null;
  position_id: number | null;
}

export interface OrdersFullMessage {
  type: 'orders_full';
  channel: string;
  login: number;
  orders: Order[];
}

export interface OrderUpdateMessage extends Order {
  type: 'order_update';
  channel: string;
  op: 'add' | 'update' | 'delete';
  seq: number;
}

// ------------------------------------------------------------------ prices:{group}

export interface PriceMessage {
  type: 'price';
  channel: string;
  symbol: string;
  bid: number;
  ask: number;
  digits: number;
  ts: number;
}

// ------------------------------------------------------------------ commissions:{ib}

export interface CommissionBody {
  client: number;
  client_name: string | null;
  symbol: string;
  volume: number;
  amount: number;
  level: number;
  deal: number;
  ts: number;
}

export interface CommissionsFullMessage {
  type: 'commissions_full';
  channel: string;
  ib: number;
  total: number;
  count: number;
  by_level: Record<string, number>;
  recent: CommissionBody[];
}

export interface CommissionMessage extends CommissionBody {
  type: 'commission';
  channel: string;
  seq: number;
}

// ------------------------------------------------------------------ network:{ib}

export interface NetworkFullMessage {
  type: 'network_full';
  channel: string;
  ib: number;
  clients: { client: number; level: number; name: string | null }[];
}

export interface ClientJoinedMessage {
  type: 'client_joined';
  channel: string;
  client: number;
  ib: number;
  level: number;
  name: string | null;
  seq: number;
}

export interface ClientLeftMessage {
  type: 'client_left';
  channel: string;
  client: number;
  ib: number;
  level: number;
  name: string | null;
  seq: number;
}

// ------------------------------------------------------------------ exposure, alerts

export interface ExposureRow {
  symbol: string;
  buy_lots: number;
  sell_lots: number;
  net_lots: number;
  notional: number;
  notional_usd: number | null;
  positions: number;
  profit: number;
}

export interface ExposureMessage {
  type: 'exposure';
  channel: string;
  symbols: ExposureRow[];
}

export interface AlertsFullMessage {
  type: 'alerts_full';
  channel: string;
  recent: AlertBody[];
}

/** Every channel message this SDK knows, by `type`. */
export interface ChannelMessageMap {
  portfolio_full: PortfolioFullMessage;
  position_opened: PositionOpenedMessage;
  position_update: PositionUpdateMessage;
  position_closed: PositionClosedMessage;
  account_update: AccountUpdateMessage;
  alert: AlertMessage;
  orders_full: OrdersFullMessage;
  order_update: OrderUpdateMessage;
  price: PriceMessage;
  commissions_full: CommissionsFullMessage;
  commission: CommissionMessage;
  network_full: NetworkFullMessage;
  client_joined: ClientJoinedMessage;
  client_left: ClientLeftMessage;
  exposure: ExposureMessage;
  alerts_full: AlertsFullMessage;
}

/** A message published on a channel (known types, or a future one). */
export type ChannelMessage =
  | ChannelMessageMap[keyof ChannelMessageMap]
  | { type: string; channel: string; seq?: number; [field: string]: unknown };

export type ServerMessage =
  | WelcomeMessage
  | SubscribedMessage
  | UnsubscribedMessage
  | ErrorMessage
  | PongMessage
  | ReconnectMessage
  | ChannelMessage;
