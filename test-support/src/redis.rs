//! A `redis-server` of a test's own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` (from `PATH`) of the test's own on a spare port of 127.0.0.1, killed (by
/// its pid) when dropped, also when the test panics. Without persistence it starts empty each
/// time; [`PrivateRedis::start_durable`] makes one that keeps its data across a restart.
pub struct PrivateRedis {
    port: u16,
    dir: Option<PathBuf>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server without persistence on a spare port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not on `PATH` or does not answer within 10 seconds.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts a server that writes every command to an append-only file (fsync always) in a
    /// directory of its own (removed when dropped), so a restart keeps the data, as a
    /// production Redis with AOF would.
    ///
    /// # Panics
    ///
    /// As [`PrivateRedis::start`], and if the directory cannot be created.
    pub fn start_durable() -> Self {
        Self::launch(true)
    }

    fn launch(durable: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = durable.then(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "idem-redis-{}-{port}-{nanos:x}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("a directory for the append-only file");
            dir
        });
        let mut server = PrivateRedis {
            port,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers `PING` (a durable one
    /// answers `-LOADING` while it reads its append-only file).
    ///
    /// # Panics
    ///
    /// If it is already running, or as [`PrivateRedis::start`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string()]).args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
        ]);
        match &self.dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the test starts a private server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 64];
                conn.set_read_timeout(Some(Duration::from_secs(1))).ok();
                if conn.write_all(b"PING\r\n").is_ok()
                    && conn
                        .read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, by its pid: no goodbye to the clients) and waits for it to
    /// exit. [`PrivateRedis::restart`] starts it again on the same port.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
