//! Where a WebSocket upgrade request carries its token
//! (`tradecast_gateway::credentials::bearer_token`): the query string and the
//! headers, both straight from the client.
//!
//! Input: the first line is the query string (absent when the input has no newline
//! at all), every further line a `Name: value` header (lines that are not a valid
//! header are skipped, as an HTTP parser would refuse them).
//!
//! Checked: no panic; an extracted token is non-empty and comes from the query's
//! `token=` (percent-decoded) or the `Authorization: Bearer` header.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use tradecast_gateway::credentials::bearer_token;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query, header_lines) = match text.split_once('\n') {
        Some((query, rest)) => (Some(query), rest),
        None => (None, ""),
    };
    let mut headers = HeaderMap::new();
    for line in header_lines.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim_start().as_bytes()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let Some(token) = bearer_token(query, &headers) else {
        return;
    };
    assert!(!token.is_empty());
    let in_query = query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("token=")));
    if !in_query {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let header = header.expect("a token without ?token= comes from Authorization");
        assert!(header.starts_with("Bearer ") || header.starts_with("bearer "));
        assert!(
            header.contains(token.as_str()),
            "the header holds the token"
        );
    }
});
