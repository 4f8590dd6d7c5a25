//! The shared servers' URLs, and the rule for skipping a test when one is not set.

/// The variable's value, or `None` after printing `skipped: <var> is not set` (also when it
/// is set to nothing but white space).
pub fn env_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            println!("skipped: {var} is not set");
            None
        }
    }
}

/// `IDEM_REDIS_URL` (e.g. `redis://127.0.0.1:6379`), or `None` after printing the skip line.
pub fn redis_url() -> Option<String> {
    env_url("IDEM_REDIS_URL")
}

/// `IDEM_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`), or `None` after
/// printing the skip line.
pub fn database_url() -> Option<String> {
    env_url("IDEM_DATABASE_URL")
}
