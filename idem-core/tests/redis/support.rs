//! Helpers for the Redis tests alone: unique prefixes and command counts. The shared server's
//! URL and the private servers come from `idem_test_support`.

use std::collections::HashMap;

use idem_test_support::PrivateRedis;

/// A key prefix no other test or run uses.
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("idem-test:{test}:{}-{nanos:x}:", std::process::id())
}

/// Reads `INFO commandstats` through one connection of its own, opened before the readings
/// (so its handshake is not counted between them).
pub struct Stats(redis::aio::MultiplexedConnection);

impl Stats {
    pub async fn of(server: &PrivateRedis) -> Self {
        let conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Stats(conn)
    }

    /// Calls per command name so far.
    pub async fn read(&mut self) -> HashMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.0)
            .await
            .unwrap();
        info.lines()
            .filter_map(|line| line.strip_prefix("cmdstat_"))
            .filter_map(|line| {
                let (name, stats) = line.split_once(':')?;
                let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }
}
