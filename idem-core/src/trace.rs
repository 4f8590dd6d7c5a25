//! tracing events: what idem did with each call, under the target `idem`.
//!
//! Every event carries the scope and the key. Keys can be sensitive (a payment id, an e-mail),
//! so the key appears only as a 16-hex-digit digest unless [`log_plain_keys`] opts in.
//!
//! | event | level |
//! | --- | --- |
//! | `claimed`, `replayed`, `waiting`, `released` | `DEBUG` |
//! | `taken over` (an expired lease) | `INFO` |
//! | `fenced` (a late write refused) | `WARN` |
//! | store errors, outcomes that could not be stored | `ERROR` |

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::key::RecordKey;

static PLAIN_KEYS: AtomicBool = AtomicBool::new(false);

/// Logs keys as they are instead of as digests (off by default, since keys can be sensitive).
///
/// ```
/// idem_core::log_plain_keys(true);
/// # idem_core::log_plain_keys(false);
/// ```
pub fn log_plain_keys(on: bool) {
    PLAIN_KEYS.store(on, Ordering::Relaxed);
}

pub(crate) fn plain_keys() -> bool {
    PLAIN_KEYS.load(Ordering::Relaxed)
}

/// The key as logged: a digest unless plain keys were opted into.
pub(crate) struct Key<'a>(pub(crate) &'a RecordKey);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if plain_keys() {
            f.write_str(self.0.key())
        } else {
            f.write_str(&self.0.digest())
        }
    }
}

macro_rules! event {
    ($level:ident, $key:expr, $($rest:tt)*) => {
        ::tracing::$level!(target: "idem", scope = $key.scope(), key = %$crate::trace::Key($key), $($rest)*)
    };
}

pub(crate) use event;
