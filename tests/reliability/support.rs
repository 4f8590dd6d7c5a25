//! Helpers shared by the reliability tests alone: unique names, a seeded random number
//! generator, a private PostgreSQL cluster, the process's resident memory and Redis key
//! cleanup. The servers' URLs (with the skip rule), the private `redis-server` and the TCP
//! proxy that can cut connections come from `idem_test_support`, shared with idem-core's tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A name no other test or run uses, made of `[a-z0-9_]` (a valid table name and key prefix).
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut rng = Rng::new(nanos as u64);
    format!(
        "idem_rel_{test}_{}_{:06x}",
        std::process::id(),
        rng.next() & 0xff_ffff
    )
}

/// A seed from `IDEM_REL_SEED` (to replay a run) or from the clock; printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("IDEM_REL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: seed {seed} (replay with IDEM_REL_SEED={seed})");
    seed
}

/// xorshift64*: enough randomness for schedules, reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A PostgreSQL cluster of the test's own (never the shared server): `initdb` in a directory
/// under `/tmp` owned by `postgres`, served on a spare port on 127.0.0.1 with its socket in that
/// directory, so it can be stopped and started again for real while keeping its data. The
/// binaries come from `IDEM_PG_BIN` or `/usr/lib/postgresql/15/bin`; run as root, they run as
/// the `postgres` user (`runuser`). Dropping it (also when a test panics) stops the server
/// (`-m immediate`) and removes the directory.
pub struct PrivatePostgres {
    port: u16,
    bin: PathBuf,
    root: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl PrivatePostgres {
    /// Creates and starts the cluster; panics with the reason when it cannot.
    pub fn start() -> Self {
        let bin = std::env::var_os("IDEM_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        for tool in ["initdb", "pg_ctl", "postgres"] {
            assert!(
                bin.join(tool).is_file(),
                "the PostgreSQL restart test needs the server binaries (initdb, pg_ctl, postgres): \
                 {} not found; install PostgreSQL 15 or point IDEM_PG_BIN at its bin directory",
                bin.join(tool).display()
            );
        }
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let root = PathBuf::from(format!("/tmp/idem-pg-{}-{port}", std::process::id()));
        let mut server = PrivatePostgres {
            port,
            bin,
            root,
            as_postgres,
            running: false,
        };
        // From here on, Drop cleans up whatever exists.
        let _ = std::fs::remove_dir_all(&server.root);
        std::fs::create_dir_all(server.root.join("sock")).expect("a directory under /tmp");
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.root)
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown -R postgres {}",
                server.root.display()
            );
        }
        let data = server.data();
        server.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "-D"],
            Some(&data),
        );
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.root.join("data").display().to_string()
    }

    /// Runs one of the binaries (as `postgres` when we are root); panics with its output when
    /// it fails.
    fn run(&self, tool: &str, args: &[&str], last: Option<&str>) {
        let exe = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&exe);
            command
        } else {
            Command::new(&exe)
        };
        command.args(args).args(last);
        let out = command
            .current_dir("/tmp")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
        );
    }

    /// Starts the server (again) on its port with its data, and waits until it accepts
    /// connections (`pg_ctl -w`).
    pub fn restart(&mut self) {
        assert!(!self.running, "already running");
        let sock = self.root.join("sock").display().to_string();
        let log = self.root.join("log").display().to_string();
        let options = format!(
            "-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port
        );
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
            None,
        );
        self.running = true;
    }

    /// Stops the server like a crash (`pg_ctl -m immediate`: every backend killed, no
    /// checkpoint; the next start replays the WAL) and waits until it is gone.
    pub fn stop_immediate(&mut self) {
        if self.running {
            let data = self.data();
            self.run(
                "pg_ctl",
                &["-D", &data, "-m", "immediate", "-w", "stop"],
                None,
            );
            self.running = false;
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let exe = self.bin.join("pg_ctl");
            let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
            let _ = if self.as_postgres {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&exe)
                    .args(args)
                    .output()
            } else {
                Command::new(&exe).args(args).output()
            };
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// This process's resident memory in KiB (`VmRSS` in `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Deletes every Redis key under `prefix` (SCAN + DEL), so a run leaves nothing behind.
#[cfg(feature = "redis")]
pub async fn delete_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: u64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
