//! Where a client puts its token: `?token=` in the query string (browsers cannot set
//! headers on a WebSocket) or an `Authorization: Bearer` header. The query wins when
//! both are present. This is outside input, read before anything is verified, so it is
//! one of the fuzz targets (`fuzz/`).

use axum::http::{HeaderMap, header};

/// The token a request carries, if any (an empty one counts as none).
pub fn bearer_token(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(percent_decode)
    });
    let from_header = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_owned())
    };
    from_query.or_else(from_header).filter(|t| !t.is_empty())
}

/// JWTs are URL-safe, but a client may still percent-encode the query value. A `%`
/// not followed by two hex digits stays as it is.
fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}
