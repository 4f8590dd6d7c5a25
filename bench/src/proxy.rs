//! A TCP proxy in front of Redis or PostgreSQL that counts the requests its clients send, by
//! name.
//!
//! The database benches check round trips per call with it: a client connected through the
//! proxy makes calls one after another. A round trip is counted each time the client sends
//! something after the server has answered (so pipelined requests are one), and each request is
//! counted by name: Redis commands, PostgreSQL message kinds (`Parse`, `Bind`, `Sync`, `Query`).
//! Unlike the servers' own statistics (`INFO commandstats`, `pg_stat_statements`), the count is
//! this client's alone, whoever else uses the server, and it leaves out what runs inside the
//! server (the commands of a Lua script).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The counts of every connection through one proxy: requests by name (Redis commands in upper
/// case, PostgreSQL message kinds), and [`ROUND_TRIPS`].
pub type Counts = BTreeMap<String, u64>;

/// The key of [`Counts`] for the round trips: the times a client sent something after the
/// server had answered (messages a client sends before reading an answer are one round trip).
pub const ROUND_TRIPS: &str = "round trips";

/// The protocol the proxy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP: counts commands by name (`EVALSHA`, ...).
    Redis,
    /// PostgreSQL's frontend messages: counts them by kind (`Sync`, `Query`, `Parse`, ...).
    Postgres,
}

/// A running proxy; its tasks live as long as the runtime that started it.
#[derive(Debug, Clone)]
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

impl CountingProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    ///
    /// # Panics
    ///
    /// When no port can be bound (outside a tokio runtime too).
    pub async fn start(upstream: SocketAddr, protocol: Protocol) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the counting proxy");
        let proxy = CountingProxy {
            addr: listener.local_addr().expect("the proxy's address"),
            counts: Arc::default(),
        };
        let counts = proxy.counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, protocol, counts).await;
                    }
                });
            }
        });
        proxy
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counts since the last call, and starts counting afresh.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    protocol: Protocol,
    counts: Arc<Mutex<Counts>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Whether the server sent anything since the client last did; true at first, so the
    // client's first message counts.
    let answered = Arc::new(AtomicBool::new(true));
    let replies = tokio::spawn({
        let answered = answered.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                answered.store(true, Ordering::SeqCst);
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // PostgreSQL: until the startup message, messages have no kind byte.
    let mut started = false;
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if answered.swap(false, Ordering::SeqCst) {
            *counts
                .lock()
                .unwrap()
                .entry(ROUND_TRIPS.to_string())
                .or_default() += 1;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        loop {
            let rest = &pending[start..];
            let next = match protocol {
                Protocol::Redis => command(rest),
                Protocol::Postgres => message(rest, &mut started),
            };
            let Some((len, name)) = next else { break };
            if !name.is_empty() {
                *counts.lock().unwrap().entry(name).or_default() += 1;
            }
            start += len;
        }
        pending.drain(..start);
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    replies.abort();
}

/// The first complete command in `buf` (RESP array of bulk strings, or an inline command): its
/// length in bytes and its name in upper case; `None` while it is incomplete.
fn command(buf: &[u8]) -> Option<(usize, String)> {
    if buf.first()? != &b'*' {
        let end = buf.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&buf[..end]);
        let name = line.split_whitespace().next().unwrap_or("");
        return Some((end + 1, name.to_ascii_uppercase()));
    }
    let (args, mut pos) = number(buf, 1)?;
    let mut name = String::new();
    for i in 0..args {
        if buf.get(pos)? != &b'$' {
            return None;
        }
        let (len, data) = number(buf, pos + 1)?;
        pos = data + len + 2;
        if buf.len() < pos {
            return None;
        }
        if i == 0 {
            name = String::from_utf8_lossy(&buf[data..data + len]).to_ascii_uppercase();
        }
    }
    Some((pos, name))
}

/// The first complete PostgreSQL frontend message in `buf`: its length and its kind (empty for
/// the untyped messages before and including the startup message); `None` while incomplete.
fn message(buf: &[u8], started: &mut bool) -> Option<(usize, String)> {
    let int = |at: usize| -> Option<usize> {
        Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if !*started {
        // SSLRequest and GSSENCRequest (8 bytes, answered by one byte) come before the startup
        // message; the startup message (protocol 3.0) ends the untyped phase.
        let len = int(0)?;
        let code = int(4)?;
        if buf.len() < len {
            return None;
        }
        if code != 80_877_103 && code != 80_877_104 {
            *started = true;
        }
        return Some((len, String::new()));
    }
    let len = 1 + int(1)?;
    if buf.len() < len {
        return None;
    }
    let name = match buf[0] {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'S' => "Sync",
        b'H' => "Flush",
        b'C' => "Close",
        b'X' => "Terminate",
        _ => "other",
    };
    Some((len, name.to_string()))
}

/// The decimal number from `start` to the next CRLF, and the index after the CRLF.
fn number(buf: &[u8], start: usize) -> Option<(usize, usize)> {
    let rest = buf.get(start..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let value = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((value, start + end + 2))
}

#[cfg(test)]
mod tests {
    use super::{command, message};

    #[test]
    fn commands_are_split_and_named() {
        let two = b"*2\r\n$7\r\nevalsha\r\n$3\r\nabc\r\n*1\r\n$4\r\nPING\r\n";
        let (len, name) = command(two).unwrap();
        assert_eq!(name, "EVALSHA");
        assert_eq!(command(&two[len..]).unwrap(), (14, "PING".to_string()));
        assert_eq!(command(&two[..len - 1]), None);
        assert_eq!(command(b"PING\r\n").unwrap(), (6, "PING".to_string()));
    }

    #[test]
    fn postgres_messages_are_split_and_named() {
        let mut started = false;
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(message(&ssl, &mut started), Some((8, String::new())));
        assert!(!started);
        let startup = [0, 0, 0, 9, 0, 3, 0, 0, 0];
        assert_eq!(message(&startup, &mut started), Some((9, String::new())));
        assert!(started);
        let sync = [b'S', 0, 0, 0, 4];
        assert_eq!(message(&sync, &mut started), Some((5, "Sync".to_string())));
        assert_eq!(message(&sync[..4], &mut started), None);
    }
}
