//! The real nginx in front of nodes, configured by `deploy/nginx.conf.template`: the
//! launcher lives in `tradecast-testkit` (shared with the 3-node topology of `tradecast-bench`).
// Only some test binaries use it.
#![allow(unused_imports)]

pub use tradecast_testkit::nginx::*;
