//! Fingerprints: a SHA-256 content hash of a call's arguments.
//!
//! The arguments are written into the hasher through a canonical serde serializer rather than
//! through JSON: integers are widened (then written as LEB128 varints, zigzag for signed ones),
//! strings and byte strings are prefixed with their length (a varint too), and map entries are
//! sorted, so a `HashMap` argument hashes the same in every process (its iteration order does
//! not). Varints keep a typical request within one 64-byte SHA-256 block. Map entries are
//! collected apart; everything else goes to the hasher through a small buffer.

use std::fmt;

use serde::Serialize;
use serde::ser;
use sha2::{Digest, Sha256};

/// The SHA-256 hash of the arguments of one call, used to tell a retry (same fingerprint) from
/// a reuse of the key for a different operation (different fingerprint, [`Error::Mismatch`]).
///
/// [`Error::Mismatch`]: crate::Error::Mismatch
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use idem_core::Fingerprint;
///
/// let a: HashMap<_, _> = (0..50).map(|i| (i, i * 2)).collect();
/// let b: HashMap<_, _> = (0..50).rev().map(|i| (i, i * 2)).collect();
/// assert_eq!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&b).unwrap());
/// assert_ne!(Fingerprint::of(&1u32).unwrap(), Fingerprint::of(&2u32).unwrap());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of one value.
    ///
    /// # Errors
    ///
    /// Fails when the value's `Serialize` implementation reports an error.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, FingerprintError> {
        let mut hasher = Fingerprinter::new();
        hasher.add(value)?;
        Ok(hasher.finish())
    }

    /// A fingerprint from its 32 bytes (as read back from a store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 bytes of the hash.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters: the default key of a function without `key = ...`.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        push_hex(&mut out, &self.0);
        out
    }
}

/// Appends `bytes` as lower-case hex (a table lookup per nibble, not a `write!` per byte).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Streams several values, in order, into one fingerprint.
///
/// ```
/// use idem_core::{Fingerprint, Fingerprinter};
///
/// let mut fp = Fingerprinter::new();
/// fp.add(&"order-7").unwrap();
/// fp.add(&1200u64).unwrap();
/// let both = fp.finish();
/// assert_ne!(both, Fingerprint::of(&"order-7").unwrap());
/// ```
#[derive(Clone, Default)]
pub struct Fingerprinter {
    hasher: Sha256,
}

impl Fingerprinter {
    /// An empty fingerprinter.
    pub fn new() -> Self {
        Fingerprinter::default()
    }

    /// Adds the next value.
    ///
    /// # Errors
    ///
    /// Fails when the value's `Serialize` implementation reports an error.
    pub fn add<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FingerprintError> {
        let mut sink = Buffered::new(&mut self.hasher);
        let result = value.serialize(&mut Canonical { sink: &mut sink });
        sink.flush();
        result
    }

    /// The fingerprint of everything added.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.hasher.finalize().into())
    }
}

/// A value's `Serialize` implementation failed while it was being fingerprinted.
#[derive(Debug, Clone)]
pub struct FingerprintError(String);

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot fingerprint an argument: {}", self.0)
    }
}

impl std::error::Error for FingerprintError {}

impl ser::Error for FingerprintError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FingerprintError(msg.to_string())
    }
}

impl From<FingerprintError> for crate::Error {
    fn from(err: FingerprintError) -> Self {
        crate::Error::Codec(crate::CodecError::new(err.to_string()))
    }
}

/// Where canonical bytes go: the hasher, or a buffer for a map entry that is sorted later.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_byte(&mut self, byte: u8) {
        self.put(&[byte]);
    }
}

/// The hasher, fed through a small buffer: canonical bytes come in many tiny pieces (a tag byte,
/// a varint length, a short string), and one `update` per piece costs more than the hashing.
/// The bytes hashed, and so the fingerprint, are the same.
struct Buffered<'a> {
    hasher: &'a mut Sha256,
    buf: [u8; Buffered::CAPACITY],
    len: usize,
}

impl<'a> Buffered<'a> {
    /// Two SHA-256 blocks: a typical request is hashed by one `update` at the end.
    const CAPACITY: usize = 128;

    fn new(hasher: &'a mut Sha256) -> Self {
        Buffered {
            hasher,
            buf: [0; Buffered::CAPACITY],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// The slow path of `put`: the buffer is full, or `bytes` is large.
    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        self.flush();
        if bytes.len() > Buffered::CAPACITY / 2 {
            self.hasher.update(bytes);
        } else {
            self.buf[..bytes.len()].copy_from_slice(bytes);
            self.len = bytes.len();
        }
    }
}

impl Sink for Buffered<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.spill(bytes),
        }
    }

    #[inline]
    fn put_byte(&mut self, byte: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
            }
            None => self.spill(&[byte]),
        }
    }
}

/// Unbuffered, as before `Buffered`: the tests check both hash the same.
#[cfg(test)]
impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }
}

// One tag byte per serde data-model item keeps distinct shapes from hashing alike.
mod tag {
    pub(super) const BOOL: u8 = b'b';
    pub(super) const INT: u8 = b'i';
    pub(super) const UINT: u8 = b'u';
    pub(super) const FLOAT: u8 = b'f';
    pub(super) const STR: u8 = b's';
    pub(super) const BYTES: u8 = b'y';
    pub(super) const NONE: u8 = b'n';
    pub(super) const SOME: u8 = b'o';
    pub(super) const UNIT: u8 = b'z';
    pub(super) const VARIANT: u8 = b'v';
    pub(super) const SEQ: u8 = b'[';
    pub(super) const SEQ_END: u8 = b']';
    pub(super) const MAP: u8 = b'{';
    pub(super) const MAP_END: u8 = b'}';
    pub(super) const STRUCT: u8 = b'(';
    pub(super) const STRUCT_END: u8 = b')';
}

struct Canonical<'a, S: Sink> {
    sink: &'a mut S,
}

impl<S: Sink> Canonical<'_, S> {
    fn tagged(&mut self, tag: u8, bytes: &[u8]) {
        self.sink.put_byte(tag);
        self.sink.put(bytes);
    }

    /// The tag, then `v` as an unsigned LEB128 varint (self-delimiting, so what follows cannot
    /// run into it).
    #[inline]
    fn varint(&mut self, tag: u8, v: u128) {
        match u64::try_from(v) {
            // A length, or an integer that fits 64 bits: one or two bytes, usually.
            Ok(v) if v < 0x80 => self.sink.put(&[tag, v as u8]),
            Ok(v) => self.varint_long(tag, v.into()),
            Err(_) => self.varint_long(tag, v),
        }
    }

    fn varint_long(&mut self, tag: u8, mut v: u128) {
        let mut out = [0u8; 1 + 19];
        out[0] = tag;
        let mut len = 1;
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out[len] = low;
                len += 1;
                break;
            }
            out[len] = low | 0x80;
            len += 1;
        }
        self.sink.put(&out[..len]);
    }

    fn len_prefixed(&mut self, tag: u8, bytes: &[u8]) {
        self.varint(tag, bytes.len() as u128);
        self.sink.put(bytes);
    }
}

impl<'a, 'b, S: Sink> ser::Serializer for &'a mut Canonical<'b, S> {
    type Ok = ();
    type Error = FingerprintError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = MapEntries<'a, 'b, S>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), FingerprintError> {
        self.tagged(tag::BOOL, &[u8::from(v)]);
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), FingerprintError> {
        self.serialize_i128(v.into())
    }

    fn serialize_i16(self, v: i16) -> Result<(), FingerprintError> {
        self.serialize_i128(v.into())
    }

    fn serialize_i32(self, v: i32) -> Result<(), FingerprintError> {
        self.serialize_i128(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<(), FingerprintError> {
        self.serialize_i128(v.into())
    }

    fn serialize_i128(self, v: i128) -> Result<(), FingerprintError> {
        // Zigzag: small magnitudes of either sign stay short.
        self.varint(tag::INT, ((v << 1) ^ (v >> 127)) as u128);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), FingerprintError> {
        self.serialize_u128(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<(), FingerprintError> {
        self.serialize_u128(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<(), FingerprintError> {
        self.serialize_u128(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<(), FingerprintError> {
        self.serialize_u128(v.into())
    }

    fn serialize_u128(self, v: u128) -> Result<(), FingerprintError> {
        self.varint(tag::UINT, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), FingerprintError> {
        self.serialize_f64(v.into())
    }

    fn serialize_f64(self, v: f64) -> Result<(), FingerprintError> {
        // -0.0 and 0.0 compare equal, so they fingerprint equal too.
        let v = if v == 0.0 { 0.0 } else { v };
        self.tagged(tag::FLOAT, &v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), FingerprintError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), FingerprintError> {
        self.len_prefixed(tag::STR, v.as_bytes());
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), FingerprintError> {
        self.len_prefixed(tag::BYTES, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), FingerprintError> {
        self.sink.put_byte(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), FingerprintError> {
        self.sink.put_byte(tag::SOME);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), FingerprintError> {
        self.sink.put_byte(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), FingerprintError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), FingerprintError> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), FingerprintError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), FingerprintError> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        value.serialize(self)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, FingerprintError> {
        self.sink.put_byte(tag::SEQ);
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self, FingerprintError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self, FingerprintError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, FingerprintError> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        self.serialize_seq(Some(len))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapEntries<'a, 'b, S>, FingerprintError> {
        Ok(MapEntries {
            out: self,
            entries: Vec::new(),
            key: Vec::new(),
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, FingerprintError> {
        self.sink.put_byte(tag::STRUCT);
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, FingerprintError> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        self.serialize_struct(variant, len)
    }
}

macro_rules! seq_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl<S: Sink> ser::$trait for &mut Canonical<'_, S> {
            type Ok = ();
            type Error = FingerprintError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FingerprintError> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), FingerprintError> {
                self.sink.put_byte(tag::SEQ_END);
                Ok(())
            }
        }
    )*};
}

seq_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl<S: Sink> ser::$trait for &mut Canonical<'_, S> {
            type Ok = ();
            type Error = FingerprintError;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), FingerprintError> {
                self.len_prefixed(tag::STR, key.as_bytes());
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), FingerprintError> {
                self.sink.put_byte(tag::STRUCT_END);
                Ok(())
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

/// Collects a map's entries as canonical bytes, then writes them sorted.
struct MapEntries<'a, 'b, S: Sink> {
    out: &'a mut Canonical<'b, S>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    key: Vec<u8>,
}

fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, FingerprintError> {
    let mut buf = Vec::new();
    value.serialize(&mut Canonical { sink: &mut buf })?;
    Ok(buf)
}

impl<S: Sink> ser::SerializeMap for MapEntries<'_, '_, S> {
    type Ok = ();
    type Error = FingerprintError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), FingerprintError> {
        self.key = canonical_bytes(key)?;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), FingerprintError> {
        let key = std::mem::take(&mut self.key);
        self.entries.push((key, canonical_bytes(value)?));
        Ok(())
    }

    fn end(mut self) -> Result<(), FingerprintError> {
        self.entries.sort_unstable();
        self.out.sink.put_byte(tag::MAP);
        for (key, value) in &self.entries {
            self.out.sink.put(key);
            self.out.sink.put(value);
        }
        self.out.sink.put_byte(tag::MAP_END);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Req {
        id: String,
        amount: u64,
        meta: HashMap<String, String>,
    }

    #[test]
    fn map_order_does_not_change_the_fingerprint() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..100 {
            a.insert(format!("k{i}"), format!("v{i}"));
        }
        for i in (0..100).rev() {
            b.insert(format!("k{i}"), format!("v{i}"));
        }
        let ra = Req {
            id: "x".into(),
            amount: 5,
            meta: a,
        };
        let rb = Req {
            id: "x".into(),
            amount: 5,
            meta: b,
        };
        assert_eq!(Fingerprint::of(&ra).unwrap(), Fingerprint::of(&rb).unwrap());
        let sorted: BTreeMap<_, _> = ra.meta.clone().into_iter().collect();
        assert_eq!(
            Fingerprint::of(&ra.meta).unwrap(),
            Fingerprint::of(&sorted).unwrap()
        );
    }

    #[test]
    fn adjacent_strings_do_not_run_together() {
        let ab = Fingerprint::of(&("ab", "c")).unwrap();
        let a_bc = Fingerprint::of(&("a", "bc")).unwrap();
        assert_ne!(ab, a_bc);
    }

    #[test]
    fn integer_width_does_not_matter_but_sign_and_value_do() {
        assert_eq!(
            Fingerprint::of(&5u32).unwrap(),
            Fingerprint::of(&5u64).unwrap()
        );
        assert_ne!(
            Fingerprint::of(&5u32).unwrap(),
            Fingerprint::of(&5i32).unwrap()
        );
        assert_ne!(
            Fingerprint::of(&5u32).unwrap(),
            Fingerprint::of(&6u32).unwrap()
        );
    }

    #[test]
    fn none_and_unit_differ_from_empty_string() {
        let none: Option<&str> = None;
        assert_ne!(
            Fingerprint::of(&none).unwrap(),
            Fingerprint::of(&"").unwrap()
        );
        assert_ne!(Fingerprint::of(&()).unwrap(), Fingerprint::of(&"").unwrap());
    }

    #[test]
    fn buffering_does_not_change_the_hash() {
        // Long and short pieces, across the buffer's edge: the same bytes as one update each.
        let long = "x".repeat(1000);
        let value = (
            ("a", 7u8),
            long.as_str(),
            vec!["b"; 40],
            Some(-3i64),
            long.len(),
        );
        let mut direct = Sha256::new();
        value
            .serialize(&mut Canonical { sink: &mut direct })
            .unwrap();
        let mut bytes = Vec::new();
        value
            .serialize(&mut Canonical { sink: &mut bytes })
            .unwrap();
        assert!(bytes.len() > 2 * Buffered::CAPACITY);
        assert_eq!(
            Fingerprint::of(&value).unwrap(),
            Fingerprint(direct.finalize().into())
        );
        assert_eq!(
            Fingerprint::of(&value).unwrap(),
            Fingerprint(Sha256::digest(&bytes).into())
        );
    }

    #[test]
    fn varints_keep_values_apart_at_their_edges() {
        let unsigned = [
            0u128,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::MAX.into(),
            u128::MAX,
        ];
        let signed = [0i128, -1, 1, -64, 64, i64::MIN.into(), i128::MIN, i128::MAX];
        let mut seen: Vec<Fingerprint> = unsigned
            .iter()
            .map(|v| Fingerprint::of(v).unwrap())
            .chain(signed.iter().map(|v| Fingerprint::of(v).unwrap()))
            .collect();
        let all = seen.len();
        seen.sort();
        seen.dedup();
        // 0 is in both lists, but unsigned and signed carry different tags.
        assert_eq!(seen.len(), all);
        // Prefix-free: a varint never runs into the next value.
        assert_ne!(
            Fingerprint::of(&(128u32, 1u8)).unwrap(),
            Fingerprint::of(&(0u32, 2u8)).unwrap()
        );
    }

    #[test]
    fn a_small_request_fits_one_sha256_block() {
        let req = Req {
            id: "pay-00000042".into(),
            amount: 1200,
            meta: HashMap::new(),
        };
        let mut bytes = Vec::new();
        req.serialize(&mut Canonical { sink: &mut bytes }).unwrap();
        // 55 bytes is the most one block holds with SHA-256's padding.
        assert!(bytes.len() <= 55, "{} bytes", bytes.len());
    }

    #[test]
    fn the_encoding_is_stable() {
        // Pinned: a fingerprint change would turn every stored record into a Mismatch.
        let value = ("pay-1", 1200u64, -3i32, Some(true), vec![1.5f64]);
        assert_eq!(
            Fingerprint::of(&value).unwrap().to_hex(),
            "cec3015574cb5fb06bdb91d3fd2dbcc4fb02f5a2ddf37959719ec27a73d38c75",
        );
    }

    #[test]
    fn hex_is_64_lowercase_chars() {
        let hex = Fingerprint::of(&1u8).unwrap().to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
