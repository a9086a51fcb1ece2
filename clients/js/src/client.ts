// The tradecast client: one logical session over successive WebSocket connections.
//
// It follows docs/protocol.md: per channel it keeps the `epoch` and the last durable
// `seq` it applied, drops duplicates, detects gaps and resyncs with `since`, and after a
// reconnect resumes every channel with `since`. Everything it delivers to the app
// ('message' and the per-type events) is, per channel, the snapshot followed by durable
// messages with contiguous `seq` (plus ephemeral figures): the app never has to look at
// `seq` itself. When continuity cannot be kept (`recovered: false`), a fresh snapshot
// follows and a 'reset' event says so.

import { Emitter } from './emitter.js';
import { jwtExpired, jwtExpiry } from './jwt.js';
import type {
  ChannelMessage,
  ChannelMessageMap,
  ErrorMessage,
  Since,
  SubscribedMessage,
  WelcomeMessage,
} from './types.js';

// ------------------------------------------------------------------ public types

/** What the SDK needs of a WebSocket: the browser API (also `ws` and Node 22's global). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Why the SDK asks for a token. */
export type TokenReason = 'initial' | 'expiring' | 'expired' | 'rejected';

/**
 * Returns a token (a JWT). Called before the first connection; with `expiring` shortly
 * before the current token's `exp` (the new one is handed to the node in-band, the
 * connection stays up); and again when the token expired (close 4001, or its `exp`
 * passed) or was refused at the upgrade.
 */
export type TokenProvider = (reason: TokenReason) => string | Promise<string>;

export interface ClientOptions {
  /**
   * `ws(s)://host/ws`, or a function giving the URL of each attempt (e.g. to pick
   * another node when there is no load balancer). The token is appended as `?token=`.
   */
  url: string | (() => string);
  /** A token, or a function that fetches one (called again when it expires). */
  token: string | TokenProvider;
  /**
   * The WebSocket constructor. Default: the global `WebSocket` (browsers, Deno, Bun,
   * Node >= 22). On Node 20 pass the `ws` package: `import WebSocket from 'ws'`.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * Send a `ping` this often (capped by the node's `heartbeat_ms`); when nothing at all
   * arrives for 2 intervals after a ping, the link is declared dead, closed and
   * reconnected. Default 30000; 0 disables pings and dead-link detection.
   */
  heartbeatMs?: number;
  /** Reconnect backoff: uniform in [0, min(max, initial * 2^attempt)) ("full jitter"). */
  backoffInitialMs?: number;
  /** Cap of the backoff ceiling. Default 30000. */
  backoffMaxMs?: number;
  /** A connection that stayed up this long resets the backoff. Default 10000. */
  stableAfterMs?: number;
  /** Give up on a connection attempt without `welcome` after this long. Default 10000. */
  connectTimeoutMs?: number;
  /** Channels to subscribe to on top of the role's default channels. */
  channels?: string[];
  /** Random source in [0, 1) for the jitter (tests). Default Math.random. */
  random?: () => number;
  /**
   * With a token provider: ask it for a new token this long before the current one's
   * `exp` and send it to the node in-band (`auth`), so the connection is never closed
   * with 4001. A token that lives less than twice this is refreshed halfway. Default
   * 60000; 0 disables (the node then closes with 4001 at `exp` and the SDK reconnects
   * with a new token).
   */
  refreshBeforeMs?: number;
}

/**
 * `idle` (not started), `connecting` (a connection attempt is in flight), `open`
 * (`welcome` received), `reconnecting` (waiting before the next attempt), `closed`
 * (final: `close()` was called, or the token was rejected and cannot be renewed).
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Why a channel was (re)subscribed. */
export type SubscribeCause = 'initial' | 'reconnect' | 'gap' | 'server' | 'retry';

export interface ResetInfo {
  channel: string;
  epoch: string;
  /** The position the snapshot that follows describes. */
  seq: number;
  /** The position the SDK held before. */
  previous: Since | null;
  cause: SubscribeCause;
}

export interface ReconnectingInfo {
  delayMs: number;
  attempt: number;
  /** Close code of the connection that ended (1006: no close frame / refused). */
  code: number;
  reason: string;
}

export interface ResumedInfo {
  /** Channels replayed without loss (`recovered: true`). */
  recovered: string[];
  /** Channels that started over from a snapshot (a 'reset' event was emitted for each). */
  reset: string[];
}

export interface ClosedInfo {
  code: number;
  reason: string;
}

export interface GapInfo {
  channel: string;
  expected: number;
  received: number;
}

export interface ChannelInfo {
  name: string;
  /** Durable channels carry `seq` and can be resumed. */
  durable: boolean;
  epoch: string | null;
  /** The last durable `seq` applied. */
  seq: number | null;
  /** A (re)subscribe of ours is waiting for its `subscribed` reply. */
  resyncing: boolean;
}

export interface ClientStats {
  /** Connections that reached `welcome`. */
  connections: number;
  /** Channel messages delivered to the app. */
  messages: number;
  /** Durable messages dropped because their seq was already applied. */
  duplicates: number;
  /** Gaps detected (each healed by a resubscribe with `since`). */
  gaps: number;
  /** Channels that started over from a snapshot after holding state. */
  resets: number;
}

type ChannelEvents = { [K in keyof ChannelMessageMap]: [message: ChannelMessageMap[K]] };

export interface ClientEvents extends ChannelEvents {
  /** Every state change. */
  state: [state: ConnectionState];
  connecting: [info: { attempt: number }];
  /** A connection is up (`welcome` received). */
  open: [welcome: WelcomeMessage];
  /** The connection ended; the next attempt starts in `delayMs`. */
  reconnecting: [info: ReconnectingInfo];
  /** After a reconnect, every channel's resume request has its answer. */
  resumed: [info: ResumedInfo];
  /** A channel lost continuity: a snapshot follows, reset what you derived from it. */
  reset: [info: ResetInfo];
  /** Final: no more reconnects. */
  closed: [info: ClosedInfo];
  /** A `subscribed` the SDK accepted (the snapshot or replay follows). */
  subscribed: [message: SubscribedMessage];
  /** A missing durable message was detected; a resubscribe with `since` is under way. */
  gap: [info: GapInfo];
  /** Every channel message delivered, in order (after dedupe and gap handling). */
  message: [message: ChannelMessage];
  /** A server `error` that answers no pending request, or a token provider failure. */
  error: [error: TradecastError];
}

/** An `error` from the server (or a failure of the SDK). */
export class TradecastError extends Error {
  readonly code: string;
  readonly channel?: string;
  constructor(code: string, message: string, channel?: string) {
    super(message);
    this.name = 'TradecastError';
    this.code = code;
    if (channel !== undefined) this.channel = channel;
  }
}

// ------------------------------------------------------------------ internals

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

interface ChannelState {
  name: string;
  durable: boolean;
  /** Part of the session: resubscribed after every reconnect. */
  wanted: boolean;
  /** A default channel of the role (the node subscribes it by itself). */
  isDefault: boolean;
  epoch: string | null;
  seq: number | null;
  /** Id of our outstanding subscribe: until its reply, durable messages and snapshots are held back. */
  pending: string | null;
  pendingCause: SubscribeCause;
  pendingSince: Since | null;
  retries: number;
  waiters: Waiter<SubscribedMessage>[];
}

const OPEN = 1;
const SNAPSHOT = /_full$/;
const TYPED = new Set<string>([
  'portfolio_full', 'position_opened', 'position_update', 'position_closed', 'account_update',
  'alert', 'orders_full', 'order_update', 'price', 'commissions_full', 'commission',
  'network_full', 'client_joined', 'client_left', 'exposure', 'alerts_full',
] satisfies (keyof ChannelMessageMap)[]);

function isDurableChannel(name: string): boolean {
  return !(name.startsWith('prices:') || name === 'exposure');
}

function withToken(url: string, token: string): string {
  return url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
}

// ------------------------------------------------------------------ the client

export class TradecastClient extends Emitter<ClientEvents> {
  /** Connection state (see {@link ConnectionState}). */
  state: ConnectionState = 'idle';
  /** The last `welcome` (identity, heartbeat, default channels). */
  welcome: WelcomeMessage | null = null;
  readonly stats: ClientStats = { connections: 0, messages: 0, duplicates: 0, gaps: 0, resets: 0 };

  private readonly opts: Required<Omit<ClientOptions, 'WebSocket' | 'channels' | 'token' | 'url'>> & {
    token: string | TokenProvider;
    url: string | (() => string);
  };
  private readonly WS: WebSocketConstructor | undefined;
  private readonly channelStates = new Map<string, ChannelState>();
  /** Default channels the app unsubscribed from: unsubscribed again after each welcome. */
  private readonly suppressed = new Set<string>();
  private ws: WebSocketLike | null = null;
  private gen = 0;
  private welcomed = false;
  private lastError = '';
  private token: string | null = null;
  private tokenReason: TokenReason = 'initial';
  private rejectedToken: string | null = null;
  private attempt = 0;
  private reqSeq = 0;
  private silentTicks = 0;
  private draining = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;
  private drainTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  private readonly requests = new Map<string, Waiter<unknown> & { sentAt: number; channel?: string }>();
  private openWaiters: Waiter<WelcomeMessage>[] = [];
  private resume: { ids: Set<string>; recovered: string[]; reset: string[] } | null = null;

  constructor(options: ClientOptions) {
    super();
    this.opts = {
      url: options.url,
      token: options.token,
      heartbeatMs: options.heartbeatMs ?? 30000,
      backoffInitialMs: options.backoffInitialMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 30000,
      stableAfterMs: options.stableAfterMs ?? 10000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      random: options.random ?? Math.random,
      refreshBeforeMs: options.refreshBeforeMs ?? 60000,
    };
    this.WS =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    for (const name of options.channels ?? []) this.ensureChannel(name).wanted = true;
  }

  // ---------------------------------------------------------------- public API

  /**
   * Start (or restart after `close()`) the session. Resolves with the first `welcome`;
   * rejects if the client closes for good before (e.g. the token is refused).
   * Reconnects happen by themselves afterwards.
   */
  connect(): Promise<WelcomeMessage> {
    if (!this.WS) {
      return Promise.reject(
        new TradecastError(
          'no_websocket',
          'no global WebSocket: pass the `ws` package as the WebSocket option (Node < 22)',
        ),
      );
    }
    const promise = new Promise<WelcomeMessage>((resolve, reject) => {
      this.openWaiters.push({ resolve, reject });
    });
    if (this.state === 'idle' || this.state === 'closed') {
      this.rejectedToken = null;
      this.attempt = 0;
      void this.open();
    } else if (this.state === 'open' && this.welcome) {
      const welcome = this.welcome;
      this.settleOpen((w) => w.resolve(welcome));
    }
    return promise;
  }

  /** Close for good (no reconnect). Subscriptions and resume positions are forgotten. */
  close(): void {
    this.finish(1000, 'closed by the client');
    this.channelStates.clear();
    this.suppressed.clear();
    this.welcome = null;
  }

  /**
   * Replace the token (or provider), e.g. after the client closed because its token
   * expired: call `connect()` next, and the session resumes where it stopped.
   */
  setToken(token: string | TokenProvider): void {
    this.opts.token = token;
    this.token = null;
    this.tokenReason = 'initial';
  }

  /**
   * Subscribe to a channel (kept across reconnects). Resolves with the `subscribed`
   * reply; rejects with a {@link TradecastError} (`forbidden`, `invalid_channel`,
   * `too_many_subscriptions`, …), in which case the channel is dropped again. A
   * channel already held is resynced (a fresh snapshot).
   */
  subscribe(channel: string): Promise<SubscribedMessage> {
    this.suppressed.delete(channel);
    const ch = this.ensureChannel(channel);
    ch.wanted = true;
    const promise = new Promise<SubscribedMessage>((resolve, reject) => {
      ch.waiters.push({ resolve, reject });
    });
    if (this.connected()) this.sendSubscribe(ch, null, 'initial');
    return promise;
  }

  /** Stop receiving a channel (default channels included). */
  unsubscribe(channel: string): Promise<void> {
    const ch = this.channelStates.get(channel);
    if (ch?.isDefault || this.welcome?.channels.includes(channel)) this.suppressed.add(channel);
    if (ch) {
      for (const w of ch.waiters) w.reject(new TradecastError('unsubscribed', 'unsubscribed', channel));
      this.channelStates.delete(channel);
    }
    if (!this.connected()) return Promise.resolve();
    const id = this.nextId();
    return new Promise<void>((resolve, reject) => {
      this.requests.set(id, {
        resolve: () => resolve(),
        reject: (e) => (e instanceof TradecastError && e.code === 'not_subscribed' ? resolve() : reject(e)),
        sentAt: Date.now(),
        channel,
      });
      this.send({ type: 'unsubscribe', channel, id });
    });
  }

  /** Round trip to the node; resolves with the time in ms. */
  ping(): Promise<number> {
    if (!this.connected()) return Promise.reject(new TradecastError('not_connected', 'not connected'));
    const id = this.nextId();
    const sentAt = Date.now();
    return new Promise<number>((resolve, reject) => {
      this.requests.set(id, { resolve: () => resolve(Date.now() - sentAt), reject, sentAt });
      this.send({ type: 'ping', id });
    });
  }

  /** Skip the backoff wait and reconnect now (e.g. on the browser's `online` event). */
  retryNow(): void {
    if (this.state === 'reconnecting' && this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      void this.open();
    }
  }

  /** The channels of the session and their resume positions. */
  channels(): ChannelInfo[] {
    return [...this.channelStates.values()].filter((c) => c.wanted).map((c) => this.info(c));
  }

  channel(name: string): ChannelInfo | undefined {
    const ch = this.channelStates.get(name);
    return ch && ch.wanted ? this.info(ch) : undefined;
  }

  // ---------------------------------------------------------------- connection

  private connected(): boolean {
    return this.state === 'open' && this.ws !== null && this.ws.readyState === OPEN;
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  private async open(): Promise<void> {
    const gen = ++this.gen;
    this.setState('connecting');
    let token: string;
    try {
      token = await this.currentToken();
    } catch (error) {
      if (gen !== this.gen) return;
      this.emit('error', new TradecastError('token', 'token provider failed: ' + String(error)));
      this.scheduleReconnect(1006, 'token provider failed');
      return;
    }
    if (gen !== this.gen) return;
    if (token === this.rejectedToken) {
      this.finish(4001, 'token expired or rejected, and no new token');
      return;
    }
    this.emit('connecting', { attempt: this.attempt });
    let ws: WebSocketLike;
    try {
      const url = typeof this.opts.url === 'function' ? this.opts.url() : this.opts.url;
      ws = new this.WS!(withToken(url, token));
    } catch (error) {
      // The constructor only throws for a bad URL: retrying cannot help.
      this.emit('error', new TradecastError('bad_url', String(error)));
      this.finish(1006, 'cannot open a WebSocket: ' + String(error));
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    this.lastError = '';
    this.draining = false;
    ws.onmessage = (event) => {
      if (gen === this.gen) this.onFrame(event.data);
    };
    ws.onerror = (event) => {
      if (gen !== this.gen) return;
      const e = event as { message?: unknown; error?: { message?: unknown } };
      this.lastError = String(e?.message ?? e?.error?.message ?? 'error');
    };
    ws.onclose = (event) => {
      if (gen === this.gen) this.lost(event.code, event.reason || this.lastError);
    };
    this.connectTimer = setTimeout(() => {
      if (gen === this.gen && !this.welcomed) {
        this.dropSocket();
        this.lost(1006, 'no welcome within ' + this.opts.connectTimeoutMs + ' ms');
      }
    }, this.opts.connectTimeoutMs);
  }

  /** The token to connect with; asks the provider when there is none or it expired. */
  private async currentToken(): Promise<string> {
    const source = this.opts.token;
    if (typeof source === 'string') return source;
    if (this.token === null) {
      this.token = await source(this.tokenReason);
    } else if (jwtExpired(this.token, Date.now())) {
      this.rejectedToken = this.token;
      this.token = await source('expired');
    }
    return this.token;
  }

  /** Forget the current socket: its late events are ignored. */
  private dropSocket(code = 1000, reason = ''): void {
    const ws = this.ws;
    this.ws = null;
    this.gen++;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    ws.onerror = () => {}; // `ws` emits errors on an aborted handshake
    try {
      ws.close(code, reason);
    } catch {
      /* already closing */
    }
  }

  private clearConnectionTimers(): void {
    for (const t of [this.connectTimer, this.stableTimer, this.drainTimer, this.refreshTimer]) if (t) clearTimeout(t);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    this.connectTimer = this.stableTimer = this.drainTimer = this.heartbeatTimer = this.refreshTimer = null;
  }

  /** The connection ended (close event, dead link, timeout). Decide what comes next. */
  private lost(code: number, reason: string): void {
    const welcomed = this.welcomed;
    if (this.ws) this.dropSocket();
    this.clearConnectionTimers();
    this.welcomed = false;
    this.resume = null;
    for (const ch of this.channelStates.values()) ch.pending = null;
    for (const [id, request] of this.requests) {
      this.requests.delete(id);
      request.reject(new TradecastError('connection_lost', 'the connection closed: ' + code));
    }
    if (this.state === 'closed') return;

    const source = this.opts.token;
    const refused = !welcomed && /\b401\b/.test(reason);
    const expired = this.token !== null && jwtExpired(this.token, Date.now());
    if (code === 4001 || refused || (!welcomed && typeof source !== 'string' && expired)) {
      // Never reconnect with this token: get a new one, or stop.
      if (typeof source === 'string') {
        this.finish(4001, code === 4001 ? 'token expired' : 'token rejected: ' + reason);
        return;
      }
      this.rejectedToken = this.token;
      this.token = null;
      this.tokenReason = code === 4001 || expired ? 'expired' : 'rejected';
      // A token that simply ran out is replaced at once; anything that repeats (a
      // refused token, tokens that expire right away, a skewed clock) backs off.
      if (code === 4001 && this.attempt === 0) {
        this.attempt++;
        this.scheduleReconnect(code, reason, 0);
      } else {
        this.scheduleReconnect(code, reason);
      }
      return;
    }
    if (typeof source === 'string' && !welcomed && jwtExpired(source, Date.now())) {
      this.finish(4001, 'token expired');
      return;
    }
    if (this.draining) {
      // The node told us to move (`reconnect`): not a failure, no backoff.
      this.scheduleReconnect(code, reason, 0);
      return;
    }
    if (code === 4029) this.attempt = Math.max(this.attempt, 4); // rate limited: back off harder
    this.scheduleReconnect(code, reason);
  }

  private scheduleReconnect(code: number, reason: string, delay?: number): void {
    if (delay === undefined) {
      const ceiling = Math.min(
        this.opts.backoffMaxMs,
        this.opts.backoffInitialMs * 2 ** Math.min(this.attempt, 30),
      );
      delay = Math.floor(this.opts.random() * ceiling);
      this.attempt++;
    }
    this.setState('reconnecting');
    this.emit('reconnecting', { delayMs: delay, attempt: this.attempt, code, reason });
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delay);
  }

  /** Final close: no more reconnects. */
  private finish(code: number, reason: string): void {
    if (this.state === 'closed') return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.setState('closed');
    this.dropSocket(1000, reason.slice(0, 100));
    this.lost(code, reason);
    for (const ch of this.channelStates.values()) {
      for (const w of ch.waiters) w.reject(new TradecastError('closed', reason, ch.name));
      ch.waiters = [];
    }
    this.settleOpen((w) => w.reject(new TradecastError('closed', reason)));
    this.emit('closed', { code, reason });
  }

  private settleOpen(fn: (w: Waiter<WelcomeMessage>) => void): void {
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const w of waiters) fn(w);
  }

  private send(message: object): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  private nextId(): string {
    return 'c' + ++this.reqSeq;
  }

  // ---------------------------------------------------------------- token refresh

  /** Plan the in-band refresh of the current token (only with a token provider). */
  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const before = this.opts.refreshBeforeMs;
    const exp = this.token === null ? null : jwtExpiry(this.token);
    if (typeof this.opts.token === 'string' || !(before > 0) || exp === null) return;
    const left = exp * 1000 - Date.now();
    if (left <= 0) return; // the node closes with 4001; lost() renews the token
    const delay = left > 2 * before ? left - before : left / 2;
    const gen = this.gen;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      if (gen === this.gen) void this.refresh(gen);
    }, delay);
  }

  /** Fetch a new token and hand it to the node; on failure the 4001 path takes over. */
  private async refresh(gen: number): Promise<void> {
    const source = this.opts.token;
    if (typeof source === 'string') return;
    let token: string;
    try {
      token = await source('expiring');
    } catch (error) {
      this.emit('error', new TradecastError('token', 'token provider failed: ' + String(error)));
      return;
    }
    if (gen !== this.gen || !this.connected()) return;
    // Nothing newer to hand over: the node closes with 4001 at `exp`, and lost() asks again.
    if ((jwtExpiry(token) ?? 0) <= (this.token === null ? 0 : (jwtExpiry(this.token) ?? 0))) return;
    const id = this.nextId();
    try {
      await new Promise<void>((resolve, reject) => {
        this.requests.set(id, { resolve: () => resolve(), reject, sentAt: Date.now() });
        this.send({ type: 'auth', token, id });
      });
    } catch (error) {
      if (gen === this.gen && error instanceof TradecastError) this.emit('error', error);
      return;
    }
    if (gen !== this.gen) return;
    this.token = token;
    this.scheduleRefresh();
  }

  // ---------------------------------------------------------------- heartbeat

  private startHeartbeat(serverMs: number): void {
    const own = this.opts.heartbeatMs;
    if (!(own > 0)) return;
    const interval = serverMs > 0 ? Math.min(own, serverMs) : own;
    const gen = this.gen;
    this.silentTicks = 0;
    // Counting ticks without any inbound frame (rather than wall time) stays right when a
    // background tab throttles timers: the link is dead after 2 pings in a row got
    // nothing back for a whole interval each.
    this.heartbeatTimer = setInterval(() => {
      if (gen !== this.gen) return;
      if (this.silentTicks >= 2) {
        this.dropSocket(4000, 'heartbeat timeout');
        this.lost(4000, 'heartbeat timeout: nothing received for 2 intervals');
        return;
      }
      this.silentTicks++;
      this.send({ type: 'ping' });
    }, interval);
  }

  // ---------------------------------------------------------------- inbound

  /** One inbound frame. (Tests wrap this method to inject loss.) */
  protected handleFrame(data: unknown): void {
    this.silentTicks = 0;
    if (typeof data !== 'string') return;
    let m: unknown;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m && typeof m === 'object') this.handleMessage(m as { type?: unknown; [k: string]: unknown });
  }

  private onFrame(data: unknown): void {
    this.handleFrame(data);
  }

  private handleMessage(m: { type?: unknown; [k: string]: unknown }): void {
    switch (m.type) {
      case 'welcome':
        return this.onWelcome(m as unknown as WelcomeMessage);
      case 'subscribed':
        return this.onSubscribed(m as unknown as SubscribedMessage);
      case 'unsubscribed':
      case 'pong':
      case 'authenticated':
        return this.settleRequest(m.id, null);
      case 'error':
        return this.onError(m as unknown as ErrorMessage);
      case 'reconnect':
        return this.onDrain(Number(m.after_ms));
    }
    if (typeof m.type === 'string' && typeof m.channel === 'string') {
      this.onChannelMessage(m as ChannelMessage);
    }
  }

  private onWelcome(m: WelcomeMessage): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    const previous = this.welcome;
    const reconnect = previous !== null && this.stats.connections > 0;
    if (previous && (previous.user !== m.user || previous.role !== m.role)) {
      // Another identity: nothing held is valid any more.
      for (const ch of this.channelStates.values()) {
        ch.epoch = null;
        ch.seq = null;
        if (ch.isDefault) ch.wanted = false;
        ch.isDefault = false;
      }
      this.suppressed.clear();
    }
    this.welcome = m;
    this.welcomed = true;
    this.stats.connections++;
    const defaults = Array.isArray(m.channels) ? m.channels : [];
    for (const name of defaults) {
      const ch = this.ensureChannel(name);
      ch.isDefault = true;
      if (!this.suppressed.has(name)) ch.wanted = true;
    }
    this.setState('open');
    this.startHeartbeat(Number(m.heartbeat_ms) || 0);
    this.scheduleRefresh();
    const gen = this.gen;
    this.stableTimer = setTimeout(() => {
      if (gen === this.gen) this.attempt = 0;
    }, this.opts.stableAfterMs);

    // Resume: the node subscribed the default channels by itself (with a snapshot);
    // ask every channel we hold state for to continue from where we are. Until each
    // reply, its durable messages and snapshots are held back (the replay carries them).
    const resumeIds = new Set<string>();
    for (const name of this.suppressed) {
      if (defaults.includes(name)) this.send({ type: 'unsubscribe', channel: name });
    }
    for (const ch of [...this.channelStates.values()]) {
      if (!ch.wanted) {
        if (ch.waiters.length === 0) this.channelStates.delete(ch.name);
        continue;
      }
      const since = ch.durable && ch.epoch !== null && ch.seq !== null ? { epoch: ch.epoch, seq: ch.seq } : null;
      if (ch.isDefault && !since) continue; // the node's own subscribe is all we need
      const id = this.sendSubscribe(ch, since, since ? 'reconnect' : 'initial');
      if (since) resumeIds.add(id);
    }
    this.resume = reconnect ? { ids: resumeIds, recovered: [], reset: [] } : null;
    this.emit('open', m);
    this.settleOpen((w) => w.resolve(m));
    this.maybeResumed();
  }

  private maybeResumed(): void {
    const r = this.resume;
    if (r && r.ids.size === 0) {
      this.resume = null;
      this.emit('resumed', { recovered: r.recovered, reset: r.reset });
    }
  }

  private sendSubscribe(ch: ChannelState, since: Since | null, cause: SubscribeCause): string {
    const id = this.nextId();
    ch.pending = id;
    ch.pendingCause = cause;
    ch.pendingSince = since;
    const request: { type: 'subscribe'; channel: string; id: string; since?: Since } = {
      type: 'subscribe',
      channel: ch.name,
      id,
    };
    if (since) request.since = since;
    this.send(request);
    return id;
  }

  private onSubscribed(m: SubscribedMessage): void {
    let ch = this.channelStates.get(m.channel);
    if (!ch) {
      if (m.id !== undefined || this.suppressed.has(m.channel)) return; // a channel we dropped
      ch = this.ensureChannel(m.channel); // the node subscribed us by itself
      ch.wanted = true;
    }
    if (!ch.wanted) return;
    // While our own (re)subscribe is outstanding, any other `subscribed` (the node's
    // automatic one after a reconnect, a server resync, an older reply) and what
    // follows it is superseded by our reply: ignore it.
    if (ch.pending !== null && m.id !== ch.pending) return;
    const cause: SubscribeCause = ch.pending !== null ? ch.pendingCause : 'server';
    const replyId = ch.pending;
    ch.pending = null;
    ch.pendingSince = null;
    ch.retries = 0;
    const previous = ch.epoch !== null && ch.seq !== null ? { epoch: ch.epoch, seq: ch.seq } : null;
    ch.epoch = m.epoch;
    if (!m.recovered || ch.seq === null) ch.seq = Number(m.seq) || 0; // a snapshot follows
    // recovered: keep our seq, the replay continues right after it.
    this.emit('subscribed', m);
    const reset = !m.recovered && previous !== null && ch.durable;
    if (reset) {
      this.stats.resets++;
      this.emit('reset', { channel: ch.name, epoch: m.epoch, seq: ch.seq, previous, cause });
    }
    if (replyId !== null && this.resume?.ids.delete(replyId)) {
      (m.recovered ? this.resume.recovered : this.resume.reset).push(ch.name);
      this.maybeResumed();
    }
    const waiters = ch.waiters;
    ch.waiters = [];
    for (const w of waiters) w.resolve(m);
  }

  private onChannelMessage(m: ChannelMessage): void {
    const ch = this.channelStates.get(m.channel);
    if (!ch || !ch.wanted) return;
    const seq = (m as { seq?: unknown }).seq;
    if (typeof seq === 'number') {
      if (ch.pending !== null) return; // held back: the reply's replay or snapshot covers it
      if (ch.seq !== null) {
        if (seq <= ch.seq) {
          this.stats.duplicates++;
          return;
        }
        if (seq > ch.seq + 1) {
          this.stats.gaps++;
          this.emit('gap', { channel: ch.name, expected: ch.seq + 1, received: seq });
          this.sendSubscribe(ch, ch.epoch !== null ? { epoch: ch.epoch, seq: ch.seq } : null, 'gap');
          return;
        }
      }
      ch.seq = seq;
    } else if (ch.pending !== null && SNAPSHOT.test(m.type)) {
      return; // the snapshot of a superseded `subscribed`
    }
    this.stats.messages++;
    this.emit('message', m);
    if (TYPED.has(m.type)) (this.emit as (event: string, message: ChannelMessage) => void)(m.type, m);
  }

  private onError(m: ErrorMessage): void {
    const error = new TradecastError(String(m.code), String(m.message ?? m.code), m.channel);
    if (m.id === undefined || m.id === null) {
      this.emit('error', error);
      return;
    }
    const id = String(m.id);
    const ch = [...this.channelStates.values()].find((c) => c.pending === id);
    if (ch) {
      const cause = ch.pendingCause;
      const since = ch.pendingSince;
      ch.pending = null;
      ch.pendingSince = null;
      if (this.resume?.ids.delete(id)) {
        this.resume.reset.push(ch.name);
        this.maybeResumed();
      }
      if (m.code === 'unavailable' && ch.epoch !== null) {
        // The broker could not serve it now: ask again later, from the same position.
        const delay = Math.min(this.opts.backoffMaxMs, 1000 * 2 ** Math.min(ch.retries++, 10));
        const gen = this.gen;
        const timer = setTimeout(() => {
          this.retryTimers.delete(timer);
          if (gen === this.gen && ch.wanted && ch.pending === null) this.sendSubscribe(ch, since, 'retry');
        }, delay);
        this.retryTimers.add(timer);
        this.emit('error', error);
        return;
      }
      if (ch.epoch === null || cause === 'reconnect' || cause === 'retry') {
        // Never held, or no longer readable: drop it from the session.
        this.channelStates.delete(ch.name);
        ch.wanted = false;
      }
      const waiters = ch.waiters;
      ch.waiters = [];
      if (waiters.length === 0) this.emit('error', error);
      for (const w of waiters) w.reject(error);
      return;
    }
    if (this.requests.has(id)) this.settleRequest(id, error);
    else this.emit('error', error);
  }

  private settleRequest(id: unknown, error: Error | null): void {
    if (id === undefined || id === null) return;
    const key = String(id);
    const request = this.requests.get(key);
    if (!request) return;
    this.requests.delete(key);
    if (error) request.reject(error);
    else request.resolve(undefined);
  }

  /** The node is draining: it closes this connection with 1001 after `after_ms`. */
  private onDrain(afterMs: number): void {
    this.draining = true;
    const after = Number.isFinite(afterMs) && afterMs >= 0 ? afterMs : 1000;
    const gen = this.gen;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    // Should the close never come, move by ourselves shortly after.
    this.drainTimer = setTimeout(() => {
      if (gen !== this.gen) return;
      this.dropSocket(1000, 'moving (server draining)');
      this.lost(1001, 'server draining');
    }, after + 2000);
  }

  // ---------------------------------------------------------------- helpers

  private ensureChannel(name: string): ChannelState {
    let ch = this.channelStates.get(name);
    if (!ch) {
      ch = {
        name,
        durable: isDurableChannel(name),
        wanted: false,
        isDefault: false,
        epoch: null,
        seq: null,
        pending: null,
        pendingCause: 'initial',
        pendingSince: null,
        retries: 0,
        waiters: [],
      };
      this.channelStates.set(name, ch);
    }
    return ch;
  }

  private info(ch: ChannelState): ChannelInfo {
    return { name: ch.name, durable: ch.durable, epoch: ch.epoch, seq: ch.seq, resyncing: ch.pending !== null };
  }
}
