//! A throwaway P-256 key pair for tests that sign ES256 tokens, shared with the JWT
//! fuzz target (`fuzz/fuzz_targets/jwt.rs` includes the same files) so that its
//! regression inputs verify the same way in `cargo test`. Never use it for anything
//! real: the private key is public.

/// PKCS#8 private key, PEM.
pub const EC_PRIVATE: &str = include_str!("../keys/p256-private.pem");
/// Its public key, PEM.
pub const EC_PUBLIC: &str = include_str!("../keys/p256-public.pem");
