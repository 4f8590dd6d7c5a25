//! What a `tracing` subscriber writes, kept for a test to read.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Collects what is written to it; clones share one buffer. [`Logs::block_on`] runs a test
/// with a subscriber writing here; [`Logs::take`] reads what it wrote.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Runs `future` to completion on a current-thread tokio runtime of its own, with a `fmt`
    /// subscriber (no colours, events up to `max_level`) writing here as the thread's default.
    /// One thread, so the tasks the future spawns log here too.
    ///
    /// # Panics
    ///
    /// If the runtime cannot be built, or when `future` panics.
    pub fn block_on<F: Future>(&self, max_level: tracing::Level, future: F) -> F::Output {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(max_level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || runtime.block_on(future))
    }

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
