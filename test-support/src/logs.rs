//! A writer that keeps what a `tracing` subscriber writes.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Collects what is written to it; clones share one buffer. Hand a clone to a subscriber
/// (`tracing_subscriber::fmt().with_writer(move || writer.clone())`) and read it with
/// [`Logs::take`].
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything written since the last `take`, as text; the buffer is left empty.
    ///
    /// # Panics
    ///
    /// If what was written is not UTF-8.
    pub fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
