//! Helpers the workspace's tests share (a dev-dependency only; not published).
//!
//! - [`redis_url`] and [`database_url`]: the shared servers' URLs, or `None` after printing
//!   `skipped: <var> is not set`.
//! - [`PrivateRedis`]: a `redis-server` of a test's own on a spare port, killed by its pid.
//! - [`Proxy`]: a TCP proxy the test can cut and restore, to take a server away without
//!   touching it.
//! - [`Logs`]: what a `tracing` subscriber writes, kept for the test to read.
//!
//! It does not depend on idem-core, so idem-core's own tests can use it without a second copy
//! of idem-core in their build.
#![warn(missing_docs, unreachable_pub)]

mod env;
mod logs;
mod proxy;
mod redis;

pub use env::{database_url, env_url, redis_url};
pub use logs::Logs;
pub use proxy::Proxy;
pub use redis::PrivateRedis;
