// The tradecast dashboard: one page, three views (trader, IB, risk), on the TypeScript
// SDK (clients/js). Served by the gateway on GET / and /demo; built by web/build.mjs
// into crates/gateway/assets/index.html with this bundle inlined.
//
// URL parameters: ?token=<JWT> connects with it; ?ws=ws://host:port/ws talks to another
// gateway (e.g. when the page is opened from disk).

import { TradecastClient } from 'tradecast-client';
import type { Role } from 'tradecast-client';
import { $, el, setText } from './dom.js';
import { frames, mark, onRenderError } from './frame.js';
import { int } from './format.js';
import { StatusIndicator } from './status.js';
import { IbView } from './views/ib.js';
import { RiskView, type SortKey } from './views/risk.js';
import { TraderView } from './views/trader.js';

const STORAGE_KEY = 'tradecast.token';

interface DemoIdentity {
  label: string;
  role: Role;
  sub: number;
  token: string;
}

/** One token's connection and the views it feeds. */
class Session {
  readonly client: TradecastClient;
  readonly trader: TraderView;
  readonly ib: IbView;
  readonly risk: RiskView;
  private readonly offs: (() => void)[] = [];
  private probing = false;

  constructor(readonly token: string) {
    this.client = new TradecastClient({ url: wsBase(), token });
    // Views attach before connect(), so they see the first snapshots.
    this.trader = new TraderView(this.client);
    this.ib = new IbView(this.client);
    this.risk = new RiskView(this.client);
    this.offs.push(
      status.follow(this.client),
      this.client.on('open', (welcome) => {
        try {
          localStorage.setItem(STORAGE_KEY, token);
        } catch {
          /* storage disabled */
        }
        showView(welcome.role, `${roleLabel(welcome.role)} ${welcome.user}`);
      }),
      this.client.on('reconnecting', () => this.probeToken()),
      this.client.on('closed', () => {
        $('#disconnect').hidden = true;
      }),
      this.client.on('error', (e) => reportError(`${e.code}: ${e.message}`)),
    );
  }

  start(): void {
    $('#disconnect').hidden = false;
    this.client.connect().catch((e: unknown) => reportError(String(e)));
  }

  dispose(): void {
    for (const off of this.offs) off();
    this.client.close();
    this.trader.dispose();
    this.ib.dispose();
    this.risk.dispose();
  }

  /**
   * A browser cannot see the HTTP status of a refused upgrade. While this token never
   * got a `welcome`, ask the node with a plain GET: it checks the token before the
   * upgrade and answers 401 for a bad one (anything else: the node is just not there).
   */
  private probeToken(): void {
    if (this.client.stats.connections > 0 || this.probing) return;
    this.probing = true;
    const url = wsBase().replace(/^ws/, 'http') + '?token=' + encodeURIComponent(this.token);
    fetch(url, { cache: 'no-store', credentials: 'omit' })
      .then((r) => {
        if ((r.status === 401 || r.status === 403) && session === this) {
          this.client.close();
          status.set('closed', 'disconnected · token rejected (401)', 'rejected');
          forgetToken(this.token);
          $('#connect-form').classList.add('attention');
        }
      })
      .catch(() => {})
      .finally(() => {
        this.probing = false;
      });
  }
}

// ---------------------------------------------------------------- page state

const status = new StatusIndicator();
let session: Session | null = null;
let identities: DemoIdentity[] = [];

function wsBase(): string {
  const override = new URLSearchParams(location.search).get('ws');
  if (override) return override;
  if (!/^https?:$/.test(location.protocol)) return 'ws://127.0.0.1:8080/ws';
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

function roleLabel(role: string): string {
  return role === 'client' ? 'Trader' : role === 'ib' ? 'IB' : role === 'admin' ? 'Risk desk' : role;
}

function showView(role: Role | null, who = ''): void {
  const view = role === 'client' ? 'trader' : role === 'ib' ? 'ib' : role === 'admin' ? 'risk' : null;
  $('#view-trader').hidden = view !== 'trader';
  $('#view-ib').hidden = view !== 'ib';
  $('#view-risk').hidden = view !== 'risk';
  $('#view-empty').hidden = view !== null;
  document.body.dataset.role = role ?? '';
  setText($('#whoami'), who);
}

function connect(raw: string): void {
  const token = raw.trim();
  if (!token) {
    $('#connect-form').classList.add('attention');
    $<HTMLInputElement>('#token').focus();
    return;
  }
  $('#connect-form').classList.remove('attention');
  session?.dispose();
  showView(null);
  status.set('connecting', 'connecting…');
  session = new Session(token);
  markIdentity();
  session.start();
}

function disconnect(): void {
  session?.client.close();
  status.set('closed', 'disconnected');
  $('#disconnect').hidden = true;
}

function forgetToken(token: string): void {
  try {
    if (localStorage.getItem(STORAGE_KEY) === token) localStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled */
  }
}

function reportError(message: string): void {
  setText($('#stat-err'), '⚠ ' + message);
  console.warn('[tradecast]', message);
}

// ---------------------------------------------------------------- demo identities

function markIdentity(): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>('#identities button')) {
    const id = identities[Number(b.dataset.index)];
    b.setAttribute('aria-pressed', String(!!id && id.token === session?.token));
  }
}

/** `GET /demo/identities` answers only under `tradecast demo`: then offer one-click buttons. */
async function loadIdentities(): Promise<void> {
  if (!/^https?:$/.test(location.protocol)) return;
  let list: unknown;
  try {
    const r = await fetch('/demo/identities', { cache: 'no-store' });
    if (!r.ok) return;
    list = await r.json();
  } catch {
    return;
  }
  if (!Array.isArray(list)) return;
  identities = list.filter((x): x is DemoIdentity => !!x && typeof x.token === 'string');
  const box = $('#identities');
  identities.forEach((id, index) => {
    const b = el('button', 'btn', id.label || `${roleLabel(id.role)} ${id.sub}`);
    b.type = 'button';
    b.dataset.role = id.role;
    b.dataset.sub = String(id.sub);
    b.dataset.index = String(index);
    b.addEventListener('click', () => {
      $<HTMLInputElement>('#token').value = id.token;
      connect(id.token);
    });
    box.append(b);
  });
  box.hidden = identities.length === 0;
  markIdentity();
}

// ---------------------------------------------------------------- wiring

$('#connect-form').addEventListener('submit', (e) => {
  e.preventDefault();
  connect($<HTMLInputElement>('#token').value);
});
$('#disconnect').addEventListener('click', disconnect);
$('#exposure thead').addEventListener('click', (e) => {
  const th = (e.target as Element).closest<HTMLElement>('th[data-key]');
  if (th && session) session.risk.sortBy(th.dataset.key as SortKey);
});
// Come back at once when the network or the tab returns.
window.addEventListener('online', () => session?.client.retryNow());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') session?.client.retryNow();
});
onRenderError((error) => {
  reportError('render: ' + (error instanceof Error ? error.message : String(error)));
  console.error(error);
});

// The footer: message rate and the SDK's session counters, once a second.
let lastMessages = 0;
let rate = 0;
const renderStats = (): void => {
  const stats = session?.client.stats;
  setText($('#stat-msgs'), int(stats?.messages ?? 0) + ' msgs');
  setText($('#stat-rate'), int(rate) + ' msg/s');
  setText(
    $('#stat-session'),
    stats ? `connections ${stats.connections} · resets ${stats.resets} · gaps ${stats.gaps} · duplicates ${stats.duplicates}` : '',
  );
};
setInterval(() => {
  const messages = session?.client.stats.messages ?? 0;
  rate = Math.max(0, messages - lastMessages);
  lastMessages = messages;
  session?.risk.tick();
  mark(renderStats);
}, 1000);

showView(null);
void loadIdentities();
{
  const fromUrl = new URLSearchParams(location.search).get('token');
  let saved: string | null = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    /* storage disabled */
  }
  const token = fromUrl || saved;
  if (token) {
    $<HTMLInputElement>('#token').value = token;
    connect(token);
  }
}

// For debugging in the console (and nothing else depends on it).
Object.assign(window, {
  tradecast: {
    get session() {
      return session;
    },
    get frames() {
      return frames;
    },
    connect,
    disconnect,
  },
});
