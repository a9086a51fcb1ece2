//! Just enough of a JWT to read its `exp` claim (no signature check: the node does it).

use std::time::{SystemTime, UNIX_EPOCH};

/// The `exp` claim (seconds since 1970), or `None` if it cannot be read.
pub(crate) fn expiry(token: &str) -> Option<f64> {
    let claims = token.split('.').nth(1)?;
    let bytes = base64url_decode(claims)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("exp")?.as_f64()
}

/// True when the token carries an `exp` at or before now.
pub(crate) fn expired(token: &str) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    expiry(token).is_some_and(|exp| exp <= now)
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp() {
        // {"alg":"HS256"} . {"sub":"42","exp":1700000000} . sig
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiIsImV4cCI6MTcwMDAwMDAwMH0.c2ln";
        assert_eq!(expiry(token), Some(1_700_000_000.0));
        assert!(expired(token));
        assert_eq!(expiry("not a token"), None);
        assert!(!expired("a.b.c"));
    }
}
