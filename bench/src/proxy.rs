//! A TCP proxy in front of Redis that counts the commands its clients send, by name.
//!
//! The Redis bench checks round trips per call with it: a client connected through the proxy
//! makes calls one after another, and every command it sends is one request and one reply.
//! Unlike the server's `INFO commandstats`, the count is this client's alone, whoever else uses
//! the server, and it leaves out the commands a Lua script runs inside the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The command counts of every connection through one proxy, by upper-case command name.
pub type Counts = BTreeMap<String, u64>;

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
    pub async fn start(upstream: SocketAddr) -> Self {
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
                        forward(client, server, counts).await;
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

async fn forward(client: TcpStream, server: TcpStream, counts: Arc<Mutex<Counts>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some((len, name)) = command(&pending[start..]) {
            *counts.lock().unwrap().entry(name).or_default() += 1;
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

/// The decimal number from `start` to the next CRLF, and the index after the CRLF.
fn number(buf: &[u8], start: usize) -> Option<(usize, usize)> {
    let rest = buf.get(start..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let value = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((value, start + end + 2))
}

#[cfg(test)]
mod tests {
    use super::command;

    #[test]
    fn commands_are_split_and_named() {
        let two = b"*2\r\n$7\r\nevalsha\r\n$3\r\nabc\r\n*1\r\n$4\r\nPING\r\n";
        let (len, name) = command(two).unwrap();
        assert_eq!(name, "EVALSHA");
        assert_eq!(command(&two[len..]).unwrap(), (14, "PING".to_string()));
        assert_eq!(command(&two[..len - 1]), None);
        assert_eq!(command(b"PING\r\n").unwrap(), (6, "PING".to_string()));
    }
}
