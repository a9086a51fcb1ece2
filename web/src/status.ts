// The connection indicator (#status), driven only by the SDK's connection events:
//
//   data-state      text                           when
//   idle            not connected                  before a token is chosen
//   connecting      connecting…                    first attempt in flight
//   connected       connected                      `open` (first welcome of a session)
//   reconnecting    reconnecting in N s            `reconnecting` (counts down to the next
//                   reconnecting…                  attempt), then `connecting` again
//   connected       connected · resuming…          `open` after a reconnect, until `resumed`
//   resumed         resumed · nothing lost          `resumed` with every channel recovered
//   reset           reset · fresh snapshot          `resumed` with a channel reset, or a
//                                                   `reset` outside a reconnect (gap, server)
//   closed          disconnected · <why>            `closed` (data-reason="rejected" for a
//                                                   token the node turned down)

import type { TradecastClient } from 'tradecast-client';
import { $, setData, setText } from './dom.js';
import { mark } from './frame.js';

export type IndicatorState =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'resumed'
  | 'reset'
  | 'closed';

export class StatusIndicator {
  state: IndicatorState = 'idle';
  private text = 'not connected';
  private reason = '';
  private reconnectAt = 0;
  private countdown: ReturnType<typeof setInterval> | null = null;
  private readonly box = $('#status');
  private readonly label = $('#status-text');
  private readonly retry = $<HTMLButtonElement>('#retry');
  private client: TradecastClient | null = null;

  constructor() {
    this.retry.addEventListener('click', () => this.client?.retryNow());
  }

  /** Follow `client` (replaces the previous one); returns a function that stops. */
  follow(client: TradecastClient): () => void {
    this.client = client;
    const offs = [
      client.on('connecting', () => {
        if (client.stats.connections > 0 || this.state === 'reconnecting') {
          this.set('reconnecting', 'reconnecting…');
        } else {
          this.set('connecting', 'connecting…');
        }
      }),
      client.on('open', () => {
        // After a reconnect the SDK resumes every channel; `resumed` tells how it went.
        this.set('connected', client.stats.connections > 1 ? 'connected · resuming…' : 'connected');
      }),
      client.on('reconnecting', ({ delayMs }) => {
        this.reconnectAt = Date.now() + delayMs;
        this.set('reconnecting', this.countdownText());
        this.startCountdown();
      }),
      client.on('resumed', ({ recovered, reset }) => {
        if (reset.length > 0) {
          this.set('reset', `reset · fresh snapshot (${reset.length} of ${reset.length + recovered.length} channels)`);
        } else {
          this.set('resumed', `resumed · nothing lost (${recovered.length} channels)`);
        }
      }),
      client.on('reset', ({ channel, cause }) => {
        // During a resume, `resumed` sums the resets up.
        if (cause !== 'reconnect') this.set('reset', `reset · fresh snapshot of ${channel}`);
      }),
      client.on('closed', ({ code, reason }) => {
        this.set('closed', 'disconnected · ' + reason, code === 4001 ? 'rejected' : '');
      }),
    ];
    return () => {
      for (const off of offs) off();
      if (this.client === client) this.client = null;
      this.stopCountdown();
    };
  }

  /** Set the indicator by hand (idle, a rejected token found by the page's probe, …). */
  set(state: IndicatorState, text: string, reason = ''): void {
    this.state = state;
    this.text = text;
    this.reason = reason;
    if (state !== 'reconnecting' || text === 'reconnecting…') this.stopCountdown();
    mark(this.render);
  }

  private countdownText(): string {
    const s = Math.max(0, Math.ceil((this.reconnectAt - Date.now()) / 1000));
    return `reconnecting in ${s} s`;
  }

  private startCountdown(): void {
    this.stopCountdown();
    this.countdown = setInterval(() => {
      if (this.state !== 'reconnecting') return this.stopCountdown();
      this.text = this.countdownText();
      mark(this.render);
    }, 250);
  }

  private stopCountdown(): void {
    if (this.countdown) clearInterval(this.countdown);
    this.countdown = null;
  }

  private readonly render = (): void => {
    setData(this.box, 'state', this.state);
    setData(this.box, 'reason', this.reason);
    setText(this.label, this.text);
    this.retry.hidden = this.state !== 'reconnecting';
  };
}
