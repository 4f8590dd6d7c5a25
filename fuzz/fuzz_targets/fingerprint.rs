//! Keys and fingerprints from arbitrary input: a key is accepted or refused with a typed error
//! (never a panic), and the fingerprint of any JSON value is canonical: the same after the
//! value is written out and read back (object keys in another order included).
#![no_main]

use idem_core::{Fingerprint, KeyError, MAX_KEY_LEN, RecordKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match RecordKey::new("fuzz::key", text.to_string()) {
        Ok(key) => {
            assert!(!text.is_empty() && text.len() <= MAX_KEY_LEN);
            assert_eq!(key.key(), text);
            assert_eq!(key.digest().len(), 16);
        }
        Err(KeyError::Empty) => assert!(text.is_empty()),
        Err(KeyError::TooLong { len, max }) => assert!(len > max && len == text.len()),
        Err(other) => panic!("unexpected {other:?}"),
    }
    let _ = Fingerprint::of(text.as_ref());
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let first = Fingerprint::of(&value).expect("a JSON value can be fingerprinted");
        let again: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&value).unwrap()).unwrap();
        assert_eq!(
            first,
            Fingerprint::of(&again).unwrap(),
            "fingerprints are canonical"
        );
    }
});
