// Number and time formatting shared by the views.

export const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

const fmtMoney = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const fmtSigned = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: 'exceptZero',
});
const fmtLots = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 4 });
const fmtLotsSigned = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2, maximumFractionDigits: 4, signDisplay: 'exceptZero',
});
const fmtIntPlain = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const fmtIntSigned = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0, signDisplay: 'exceptZero' });

export const money = (x: unknown): string => (isNum(x) ? fmtMoney.format(x) : '—');
export const signed = (x: unknown): string => (isNum(x) ? fmtSigned.format(x) : '—');
export const lots = (x: unknown): string => (isNum(x) ? fmtLots.format(x) : '—');
export const lotsSigned = (x: unknown): string => (isNum(x) ? fmtLotsSigned.format(x) : '—');
export const int = (x: unknown): string => (isNum(x) ? fmtIntPlain.format(x) : '—');
export const intSigned = (x: unknown): string => (isNum(x) ? fmtIntSigned.format(x) : '—');
export const percent = (x: unknown): string => (isNum(x) ? fmtMoney.format(x) + ' %' : '—');
export const pnlClass = (x: unknown): string => (!isNum(x) || x === 0 ? '' : x > 0 ? 'pos' : 'neg');

const pad2 = (n: number): string => (n < 10 ? '0' : '') + n;

/** hh:mm:ss of a time in ms (or s) since 1970; now when absent. */
export function clock(ts?: number | null): string {
  let t = isNum(ts) ? ts : Date.now();
  if (t < 1e12) t *= 1000;
  const d = new Date(t);
  return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
}

/** Price digits per symbol: from `price` messages (they carry `digits`), else a guess. */
const digitsBySymbol = new Map<string, number>();

export function setDigits(symbol: string, digits: unknown): void {
  if (isNum(digits) && digits >= 0 && digits <= 10) digitsBySymbol.set(symbol, digits);
}

function digitsOf(symbol: string): number {
  const known = digitsBySymbol.get(symbol);
  if (known !== undefined) return known;
  if (/^[A-Z]{6}$/.test(symbol)) return symbol.endsWith('JPY') ? 3 : symbol.startsWith('XA') ? 2 : 5;
  return 2;
}

/** A price of `symbol` with the symbol's digits; `—` for none (MT5 writes 0 for "no S/L"). */
export function price(symbol: string, x: unknown): string {
  if (!isNum(x) || x === 0) return '—';
  return x.toFixed(digitsOf(symbol));
}

/** Spread in points. */
export function spreadPoints(symbol: string, bid: number, ask: number): string {
  return String(Math.round((ask - bid) * 10 ** digitsOf(symbol)));
}
