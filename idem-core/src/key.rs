//! Idempotency keys: which record a call belongs to.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use crate::error::KeyError;

/// The longest idempotency key accepted, in bytes.
///
/// Keys are client-chosen identifiers such as UUIDs or message ids; anything longer is almost
/// certainly a payload used as a key by mistake, and is refused with
/// [`Error::InvalidKey`](crate::Error::InvalidKey) rather than stored.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest scope accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 512;

/// The identity of one record in a store: the scope (which operation) and the key (which call).
///
/// A record is unique per `(scope, key)`, so the same key used by two operations never collides.
///
/// # Examples
///
/// ```
/// use idem_core::RecordKey;
///
/// let key = RecordKey::new("payments::charge", "pay-42").unwrap();
/// assert_eq!(key.scope(), "payments::charge");
/// assert_eq!(key.key(), "pay-42");
///
/// assert!(RecordKey::new("payments::charge", "").is_err());
/// ```
#[derive(Clone)]
pub struct RecordKey {
    scope: Cow<'static, str>,
    key: String,
    /// A hash of scope and key, computed once: maps hash this `u64` rather than both strings
    /// (an in-process store hashes a key on every lookup, and again whenever a table grows).
    hash: u64,
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        // The key first: within one scope, only the keys differ.
        self.hash == other.hash
            && self.key == other.key
            && (std::ptr::eq(self.scope.as_ptr(), other.scope.as_ptr())
                || self.scope == other.scope)
    }
}

impl Eq for RecordKey {}

impl std::hash::Hash for RecordKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hash of a scope and a key: foldhash, with a seed chosen at random once per process (so
/// that keys chosen by a client cannot be chosen to collide).
fn hash_of(scope: &str, key: &str) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    static SEED: std::sync::LazyLock<foldhash::quality::RandomState> =
        std::sync::LazyLock::new(foldhash::quality::RandomState::default);
    let mut hasher = SEED.build_hasher();
    scope.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

impl RecordKey {
    /// Checks and builds a record key.
    ///
    /// # Errors
    ///
    /// [`KeyError::Empty`] when the key or the scope is empty, [`KeyError::TooLong`] when the key
    /// is longer than [`MAX_KEY_LEN`] or the scope longer than [`MAX_SCOPE_LEN`] bytes.
    pub fn new(
        scope: impl Into<Cow<'static, str>>,
        key: impl Into<String>,
    ) -> Result<Self, KeyError> {
        let scope = scope.into();
        let key = key.into();
        check_len(&key, MAX_KEY_LEN)?;
        check_len(&scope, MAX_SCOPE_LEN)?;
        let hash = hash_of(&scope, &key);
        Ok(RecordKey { scope, key, hash })
    }

    /// The hash of scope and key, computed once when the key was built (see [`hash_of`]).
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    pub(crate) fn hash_u64(&self) -> u64 {
        self.hash
    }

    /// The operation this key belongs to.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The caller-supplied (or fingerprint-derived) key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A short, stable digest of scope and key, for logs where the key itself may be sensitive.
    ///
    /// ```
    /// let key = idem_core::RecordKey::new("s", "secret-key").unwrap();
    /// assert_eq!(key.digest().len(), 16);
    /// assert!(!key.digest().contains("secret"));
    /// ```
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.scope.as_bytes());
        hasher.update([0]);
        hasher.update(self.key.as_bytes());
        let hash = hasher.finalize();
        let mut out = String::with_capacity(16);
        for byte in &hash[..8] {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys can be sensitive: Debug shows the digest unless plain keys were opted into.
        let mut s = f.debug_struct("RecordKey");
        s.field("scope", &self.scope);
        if crate::trace::plain_keys() {
            s.field("key", &self.key);
        } else {
            s.field("key_digest", &self.digest());
        }
        s.finish()
    }
}

fn check_len(s: &str, max: usize) -> Result<(), KeyError> {
    if s.is_empty() {
        Err(KeyError::Empty)
    } else if s.len() > max {
        Err(KeyError::TooLong { len: s.len(), max })
    } else {
        Ok(())
    }
}

/// Builds a key from the parts of a tuple `key = (a, b, ...)`.
///
/// Parts are joined with `:`; a `:` or `\` inside a part is escaped with `\`, so `("a:b", "c")`
/// and `("a", "b:c")` give different keys.
#[doc(hidden)]
#[derive(Default)]
pub struct KeyBuilder {
    out: String,
    first: bool,
}

impl KeyBuilder {
    #[doc(hidden)]
    pub fn new() -> Self {
        KeyBuilder {
            out: String::new(),
            first: true,
        }
    }

    #[doc(hidden)]
    pub fn part(mut self, part: &dyn fmt::Display) -> Self {
        if !self.first {
            self.out.push(':');
        }
        self.first = false;
        let _ = write!(Escaper(&mut self.out), "{part}");
        self
    }

    #[doc(hidden)]
    pub fn finish(self) -> String {
        self.out
    }
}

struct Escaper<'a>(&'a mut String);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == ':' || c == '\\' {
                self.0.push('\\');
            }
            self.0.push(c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_equal_and_hash_alike_by_content_alone() {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        let borrowed = RecordKey::new("payments::charge", "pay-1").unwrap();
        // The same scope from another allocation: equal, and the same hash.
        let owned = RecordKey::new(String::from("payments::charge"), "pay-1").unwrap();
        assert_eq!(borrowed, owned);
        assert_eq!(hasher.hash_one(&borrowed), hasher.hash_one(&owned));
        assert_eq!(borrowed, borrowed.clone());

        // Another key, another scope, or the parts moved across the boundary: not equal.
        assert_ne!(
            borrowed,
            RecordKey::new("payments::charge", "pay-2").unwrap()
        );
        assert_ne!(
            borrowed,
            RecordKey::new("payments::refund", "pay-1").unwrap()
        );
        assert_ne!(
            RecordKey::new("ab", "c").unwrap(),
            RecordKey::new("a", "bc").unwrap()
        );
        assert_ne!(
            hasher.hash_one(RecordKey::new("ab", "c").unwrap()),
            hasher.hash_one(RecordKey::new("a", "bc").unwrap())
        );
    }

    #[test]
    fn tuple_parts_are_escaped_so_they_cannot_collide() {
        let a = KeyBuilder::new().part(&"a:b").part(&"c").finish();
        let b = KeyBuilder::new().part(&"a").part(&"b:c").finish();
        assert_eq!(a, "a\\:b:c");
        assert_eq!(b, "a:b\\:c");
    }

    #[test]
    fn lengths_are_checked_on_both_parts() {
        assert_eq!(RecordKey::new("", "k"), Err(KeyError::Empty));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            RecordKey::new("s", long),
            Err(KeyError::TooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN
            })
        );
        assert!(RecordKey::new("s", "k".repeat(MAX_KEY_LEN)).is_ok());
    }
}
