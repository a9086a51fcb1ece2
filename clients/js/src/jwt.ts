/** The `exp` claim of a JWT (seconds since 1970), or `null` if it cannot be read. */
export function jwtExpiry(token: string): number | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/** True when the token carries an `exp` that is at or before `nowMs` (+ `skewMs`). */
export function jwtExpired(token: string, nowMs: number, skewMs = 0): boolean {
  const exp = jwtExpiry(token);
  return exp !== null && exp * 1000 <= nowMs + skewMs;
}
