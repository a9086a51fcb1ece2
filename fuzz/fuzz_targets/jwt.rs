//! A JWT as the gateway verifies it before the upgrade
//! (`tradecast_gateway::Authenticator::verify`), with an HS256 secret, an RSA public
//! key (RS256) and an EC public key (ES256).
//!
//! The first byte picks the shape, the rest is fuzzed:
//! - `0`: the whole token text, verified by every authenticator;
//! - `1`: the claims JSON under a valid HS256 header, correctly signed with the secret;
//! - `2`: the same, signed ES256 with the EC key;
//! - `3`: `header JSON \n claims JSON`, correctly signed HS256 (a fuzzed header).
//!
//! Shapes 1–3 get past the signature, so the claims (`sub`, `role`, `exp`) and the
//! header are what is fuzzed. Checked: no panic; an accepted token names a valid user
//! (numeric `sub`, a known role) and the signature was made with the verifier's key.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, crypto};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tradecast_gateway::Authenticator;
use tradecast_gateway::auth::Identity;

const SECRET: &str = "fuzz-secret";

/// Throwaway key pairs, only for fuzzing: the P-256 pair is the tests' own
/// (`tradecast_testkit::keys`), so the regression inputs replay the same way there.
const EC_PRIVATE: &str = include_str!("../../crates/testkit/keys/p256-private.pem");
const EC_PUBLIC: &str = include_str!("../../crates/testkit/keys/p256-public.pem");
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArknFO++MzvFssLo27SBx
fKT8sCLFRm6/OIhnat2Tpx6D2WoCC27MdVHTeehxWZfAgmhzBiKxixdFFZ8yA/M2
5LdB6ZinOVY4Lsmws+ZG+zLkLmcIlkiAgAIQM9WpoUNwSqOmZXHdtbSySXzRnLPw
8HmRI/WaMbhNlQBrWtZDx93X8iGvj0FgSDnaOSO6HJtnDKSYVexbCRrYiQaQwSqi
FcJ+heRfOpV+KmZn3TaLJZad9aqmJoe3/WxW85uLwfqWpP06JQj0Gx+zyeCx4JIc
t1KjD80FmQYe4dumBKzR95RUb5omSvmcIA8AtrLYNJVagIcjmmm2nE6fIsATKE3I
MQIDAQAB
-----END PUBLIC KEY-----";

struct Keys {
    hmac: Authenticator,
    rsa: Authenticator,
    ec: Authenticator,
    /// A node with both a secret and a public key.
    both: Authenticator,
    hmac_signer: EncodingKey,
    ec_signer: EncodingKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    hmac: Authenticator::new(Some(SECRET), None).unwrap(),
    rsa: Authenticator::new(None, Some(RSA_PUBLIC.as_bytes())).unwrap(),
    ec: Authenticator::new(None, Some(EC_PUBLIC.as_bytes())).unwrap(),
    both: Authenticator::new(Some(SECRET), Some(EC_PUBLIC.as_bytes())).unwrap(),
    hmac_signer: EncodingKey::from_secret(SECRET.as_bytes()),
    ec_signer: EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
});

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let keys = &*KEYS;
    match shape % 4 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            for auth in [&keys.hmac, &keys.rsa, &keys.ec, &keys.both] {
                if let Ok(identity) = auth.verify(&token) {
                    // Nothing here can sign for a key it does not hold, except by
                    // replaying a corpus token made with the fuzz secret.
                    assert!(!std::ptr::eq(auth, &keys.rsa), "an RS256 token verified");
                    accepted(&identity, &token);
                }
            }
        }
        1 => {
            let token = signed(
                br#"{"alg":"HS256","typ":"JWT"}"#,
                rest,
                &keys.hmac_signer,
                Algorithm::HS256,
            );
            check_signed(&token, &[&keys.hmac, &keys.both], &[&keys.rsa, &keys.ec]);
        }
        2 => {
            let token = signed(
                br#"{"alg":"ES256","typ":"JWT"}"#,
                rest,
                &keys.ec_signer,
                Algorithm::ES256,
            );
            check_signed(&token, &[&keys.ec, &keys.both], &[&keys.rsa, &keys.hmac]);
        }
        _ => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &b""[..]),
            };
            let token = signed(header, claims, &keys.hmac_signer, Algorithm::HS256);
            for auth in [&keys.hmac, &keys.rsa, &keys.ec, &keys.both] {
                if let Ok(identity) = auth.verify(&token) {
                    let header: Value =
                        serde_json::from_slice(header).expect("accepted header is JSON");
                    assert_eq!(
                        header["alg"], "HS256",
                        "only HS256 verifies an HMAC signature"
                    );
                    accepted(&identity, &token);
                }
            }
        }
    }
});

/// `base64(header).base64(claims).signature`.
fn signed(header: &[u8], claims: &[u8], key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = crypto::sign(message.as_bytes(), key, alg).expect("signing works");
    format!("{message}.{signature}")
}

/// A correctly signed token verifies (or not, on its claims) the same on every
/// authenticator holding its key, and never on one that does not.
fn check_signed(token: &str, holders: &[&Authenticator], others: &[&Authenticator]) {
    let outcome = holders[0].verify(token).map(|i| i.principal);
    for auth in holders {
        let this = auth.verify(token);
        assert_eq!(this.map(|i| i.principal), outcome);
        if let Ok(identity) = &this {
            accepted(identity, token);
        }
    }
    for auth in others {
        assert!(auth.verify(token).is_err(), "verified without the key");
    }
}

/// An accepted token's claims name a real user.
fn accepted(identity: &Identity, token: &str) {
    let claims = token
        .split('.')
        .nth(1)
        .expect("a verified token has claims");
    let claims = URL_SAFE_NO_PAD
        .decode(claims)
        .expect("verified claims are base64url");
    let claims: Value = serde_json::from_slice(&claims).expect("verified claims are JSON");
    let sub = match &claims["sub"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    assert_eq!(sub, Some(identity.principal.id));
    assert_eq!(claims["role"], identity.principal.role.as_str());
}
