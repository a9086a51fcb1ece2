// tradecast client SDK: browsers (global WebSocket) and Node >= 20 (pass `ws`).
export { TradecastClient, TradecastError } from './client.js';
export type {
  ChannelInfo,
  ClientEvents,
  ClientOptions,
  ClientStats,
  ClosedInfo,
  ConnectionState,
  GapInfo,
  ReconnectingInfo,
  ResetInfo,
  ResumedInfo,
  SubscribeCause,
  TokenProvider,
  TokenReason,
  WebSocketConstructor,
  WebSocketLike,
} from './client.js';
export { Portfolio, Orders, Exposure, Prices } from './models.js';
export type { ModelEvents } from './models.js';
export { Emitter } from './emitter.js';
export { jwtExpiry } from './jwt.js';
export type * from './types.js';
