//! Token verification: who is connecting, checked before the WebSocket upgrade.
//!
//! Tokens are JWTs with `sub` (a number or a numeric string), `role` (`client`,
//! `ib`, `admin`) and `exp`. HS256 tokens are checked against the shared secret;
//! with a public key configured, RS256 or ES256 tokens are checked against it. The
//! algorithm each key accepts is fixed by the key, never taken from the token, so a
//! token cannot pick `none` or trick the verifier into using a public key as an
//! HMAC secret. Token text never reaches a log line: errors name the reason only.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tradecast_protocol::{Principal, Role};

/// Why a token was refused; each becomes an HTTP 401 and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: pass ?token= or an Authorization: Bearer header")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token signature or algorithm is not accepted")]
    BadSignature,
    #[error("token is malformed")]
    Malformed,
    #[error("token claims are invalid: sub must be a number, role client|ib|admin")]
    BadClaims,
}

impl AuthError {
    /// The `reason` label of `tradecast_auth_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "signature",
            AuthError::Malformed => "malformed",
            AuthError::BadClaims => "claims",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Value,
    role: String,
    exp: u64,
}

/// A verified token: who, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// The token's `exp` claim, seconds since 1970.
    pub exp: u64,
    /// When the token expires; the connection is closed with 4001 then.
    pub expires_at: tokio::time::Instant,
}

/// Verifies (and, with a secret, mints) tokens.
pub struct Authenticator {
    hmac: Option<(EncodingKey, DecodingKey)>,
    public: Option<(Algorithm, DecodingKey)>,
}

impl Authenticator {
    /// `secret`: the HS256 shared secret. `public_key_pem`: an RSA or EC public key
    /// (PEM) for RS256/ES256 tokens. At least one is required.
    pub fn new(secret: Option<&str>, public_key_pem: Option<&[u8]>) -> anyhow::Result<Self> {
        let hmac = secret.map(|s| {
            (
                EncodingKey::from_secret(s.as_bytes()),
                DecodingKey::from_secret(s.as_bytes()),
            )
        });
        let public = match public_key_pem {
            None => None,
            Some(pem) => Some(
                DecodingKey::from_rsa_pem(pem)
                    .map(|key| (Algorithm::RS256, key))
                    .or_else(|_| DecodingKey::from_ec_pem(pem).map(|key| (Algorithm::ES256, key)))
                    .context("the JWT public key is neither an RSA nor an EC (P-256) PEM key")?,
            ),
        };
        if hmac.is_none() && public.is_none() {
            bail!("no JWT key: set --jwt-secret (HS256) or --jwt-public-key (RS256/ES256)");
        }
        Ok(Authenticator { hmac, public })
    }

    /// Check a token and return who it belongs to.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (algorithm, key) = match (header.alg, &self.hmac, &self.public) {
            (Algorithm::HS256, Some((_, key)), _) => (Algorithm::HS256, key),
            (alg, _, Some((expected, key))) if alg == *expected => (alg, key),
            _ => return Err(AuthError::BadSignature),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 5;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName => AuthError::BadSignature,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => AuthError::BadClaims,
                _ => AuthError::Malformed,
            }
        })?;
        let claims = data.claims;
        let id = match &claims.sub {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or(AuthError::BadClaims)?;
        let role: Role = claims.role.parse().map_err(|_| AuthError::BadClaims)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A far-off `exp` (up to u64::MAX) would overflow the clock: a century is
        // as good as forever.
        let left = claims.exp.saturating_sub(now).min(100 * 365 * 86_400);
        let expires_at = tokio::time::Instant::now() + std::time::Duration::from_secs(left);
        Ok(Identity {
            principal: Principal { id, role },
            exp: claims.exp,
            expires_at,
        })
    }

    /// Mint an HS256 token valid for `ttl_secs` (the `token` subcommand, the demo).
    pub fn mint(&self, principal: Principal, ttl_secs: u64) -> anyhow::Result<String> {
        let Some((key, _)) = &self.hmac else {
            bail!("minting tokens needs --jwt-secret");
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: Value::from(principal.id.to_string()),
            role: principal.role.as_str().to_owned(),
            exp: now.saturating_add(ttl_secs),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            key,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // A throwaway P-256 key pair, only for tests.
    use tradecast_testkit::keys::{EC_PRIVATE, EC_PUBLIC};

    fn auth() -> Authenticator {
        Authenticator::new(Some("s3cret"), None).unwrap()
    }

    #[test]
    fn minted_tokens_verify() {
        let p = Principal {
            id: 42,
            role: Role::Ib,
        };
        assert_eq!(
            auth()
                .verify(&auth().mint(p, 60).unwrap())
                .unwrap()
                .principal,
            p
        );
    }

    #[test]
    fn refuses_forged_none_and_garbage() {
        let other = Authenticator::new(Some("other"), None).unwrap();
        let token = other
            .mint(
                Principal {
                    id: 1,
                    role: Role::Admin,
                },
                60,
            )
            .unwrap();
        assert_eq!(auth().verify(&token), Err(AuthError::BadSignature));
        // {"alg":"none","typ":"JWT"} . {"sub":"1","role":"admin","exp":9999999999} .
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(auth().verify(none).is_err());
        assert_eq!(auth().verify("not-a-token"), Err(AuthError::Malformed));
    }

    fn es256_token(claims: &Claims) -> String {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
    }

    #[test]
    fn public_key_tokens_verify_and_the_key_is_never_an_hmac_secret() {
        let verifier = Authenticator::new(None, Some(EC_PUBLIC.as_bytes())).unwrap();
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let claims = Claims {
            sub: Value::from(7),
            role: "admin".into(),
            exp,
        };
        let identity = verifier.verify(&es256_token(&claims)).unwrap();
        assert_eq!(
            identity.principal,
            Principal {
                id: 7,
                role: Role::Admin
            }
        );
        // Algorithm confusion: HS256 signed with the public key's text as the secret.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(EC_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));
        // And an HS256-only node refuses ES256 tokens.
        assert_eq!(
            auth().verify(&es256_token(&claims)),
            Err(AuthError::BadSignature)
        );
    }
}
