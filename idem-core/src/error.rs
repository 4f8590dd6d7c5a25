//! The errors idem reports to callers of an idempotent function.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why an idempotent call did not run its body or could not return a stored result.
///
/// An idempotent function's error type `E` must implement `From<idem_core::Error>`; idem
/// converts into `E` whenever it answers instead of the body.
///
/// # Examples
///
/// ```
/// use idem_core::Error;
///
/// #[derive(Debug)]
/// enum PaymentError {
///     Declined,
///     Idem(Error),
/// }
///
/// impl From<Error> for PaymentError {
///     fn from(err: Error) -> Self {
///         PaymentError::Idem(err)
///     }
/// }
///
/// let err = PaymentError::from(Error::Mismatch);
/// assert!(matches!(err, PaymentError::Idem(Error::Mismatch)));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Another call holds the key and the function was declared with
    /// `concurrent = "reject"`. Retrying after `retry_after` is likely to find the outcome.
    InProgress {
        /// How long the current holder's lease has left: a sensible time to wait before retrying.
        retry_after: Duration,
    },
    /// The key was used before with different arguments (a different fingerprint). Nothing ran
    /// and the stored outcome was left as it was.
    Mismatch,
    /// A duplicate waited longer than the function's `wait` for the first call to finish.
    WaitTimeout,
    /// The store could not be reached or failed. When this is returned from a first call, the
    /// body did not run.
    Store(StoreError),
    /// A stored outcome could not be encoded or decoded (corrupt bytes, or a value of another
    /// type stored under the same scope and key).
    Codec(CodecError),
    /// The idempotency key cannot be used (empty, or longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)).
    InvalidKey(KeyError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InProgress { retry_after } => write!(
                f,
                "the operation is already in progress under this idempotency key; retry after {retry_after:?}"
            ),
            Error::Mismatch => f.write_str(
                "the idempotency key was already used with different arguments; use a new key for a new operation",
            ),
            Error::WaitTimeout => f.write_str(
                "timed out waiting for the first call with this idempotency key to finish",
            ),
            Error::Store(err) => write!(f, "idempotency store failed: {err}"),
            Error::Codec(err) => write!(f, "stored outcome could not be used: {err}"),
            Error::InvalidKey(err) => write!(f, "invalid idempotency key: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(err) => Some(err),
            Error::Codec(err) => Some(err),
            Error::InvalidKey(err) => Some(err),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Store(err)
    }
}

impl From<CodecError> for Error {
    fn from(err: CodecError) -> Self {
        Error::Codec(err)
    }
}

impl From<KeyError> for Error {
    fn from(err: KeyError) -> Self {
        Error::InvalidKey(err)
    }
}

/// A store that could not be reached or that failed an operation.
///
/// Store implementations build it with [`StoreError::new`] around their own error type; the
/// original error stays reachable through [`std::error::Error::source`].
#[derive(Debug, Clone)]
pub struct StoreError {
    context: &'static str,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A store error with what was being attempted and the backend's own error.
    ///
    /// ```
    /// use idem_core::StoreError;
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// let err = StoreError::new("claim", io);
    /// assert_eq!(err.to_string(), "claim: refused");
    /// ```
    pub fn new(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError {
            context,
            source: Some(Arc::new(source)),
        }
    }

    /// A store error without an underlying cause, such as "no default store configured".
    ///
    /// ```
    /// let err = idem_core::StoreError::msg("no default store configured");
    /// assert_eq!(err.to_string(), "no default store configured");
    /// ```
    pub fn msg(context: &'static str) -> Self {
        StoreError {
            context,
            source: None,
        }
    }

    /// What the store was doing when it failed (`"claim"`, `"complete"`, ...).
    pub fn context(&self) -> &'static str {
        self.context
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(self.context),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A stored outcome that could not be encoded or decoded.
#[derive(Debug, Clone)]
pub struct CodecError {
    message: Arc<str>,
}

impl CodecError {
    /// A codec error with a description of what could not be encoded or decoded.
    ///
    /// ```
    /// let err = idem_core::CodecError::new("stored outcome is not valid JSON");
    /// assert_eq!(err.to_string(), "stored outcome is not valid JSON");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        CodecError {
            message: message.into().into(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {}

/// Why an idempotency key was refused.
///
/// ```
/// use idem_core::{KeyError, RecordKey};
///
/// assert_eq!(RecordKey::new("scope", "").unwrap_err(), KeyError::Empty);
/// assert!(matches!(
///     RecordKey::new("scope", "k".repeat(2000)).unwrap_err(),
///     KeyError::TooLong { len: 2000, .. }
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is the empty string.
    Empty,
    /// The key is longer than the limit.
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// The longest key accepted, in bytes.
        max: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("the key is empty"),
            KeyError::TooLong { len, max } => {
                write!(f, "the key is {len} bytes long; at most {max} are allowed")
            }
        }
    }
}

impl std::error::Error for KeyError {}
