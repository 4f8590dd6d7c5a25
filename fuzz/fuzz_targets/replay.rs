//! Record decoding: whatever bytes a store holds as a completed outcome (of either kind), a
//! call decodes them into its type or reports `Error::Codec`; it never panics, never runs the
//! body, and never changes the record.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use idem_core::store::{
    Claim, ClaimRequest, ClaimToken, Fence, Outcome, OutcomeKind, Owner, Record,
};
use idem_core::{
    Error, Fingerprint, MemoryStore, NoReplay, Options, RecordKey, ReplayErr, Store, run,
};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

type Value = (String, Vec<u8>, Option<f64>, BTreeMap<String, i64>);

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let kind = if kind % 2 == 0 {
        OutcomeKind::Ok
    } else {
        OutcomeKind::Err
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryStore::new();
        let scope = "fuzz::replay";
        let key = RecordKey::new(scope, "k").unwrap();
        let fingerprint = Fingerprint::of("k").unwrap();
        let owner = Owner::new();
        let claim = store
            .claim(&ClaimRequest {
                key: &key,
                fingerprint,
                owner,
                lease: Duration::from_secs(60),
            })
            .await
            .unwrap();
        let Claim::Acquired { fence, .. } = claim else {
            panic!("{claim:?}")
        };
        let stored = Outcome::new(kind, bytes.to_vec());
        let token = ClaimToken::new(key.clone(), owner, fence);
        assert_eq!(
            store
                .complete(&token, &stored, Duration::from_secs(60))
                .await
                .unwrap(),
            Fence::Held
        );

        let options = Options::new(scope);
        let body = async { unreachable!("a completed record is replayed, the body never runs") };
        let got: Result<Value, Error> = run(
            &store,
            options,
            Some("k".into()),
            Ok(fingerprint),
            NoReplay,
            body,
        )
        .await;
        match (kind, &got) {
            (OutcomeKind::Ok, Ok(value)) => {
                assert_eq!(
                    Some(value),
                    serde_json::from_slice::<Value>(bytes).ok().as_ref()
                )
            }
            (_, Err(Error::Codec(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
        // The same bytes replayed by a function whose errors are stored (`replay_err`).
        let body = async { unreachable!("a completed record is replayed, the body never runs") };
        let got: Result<u64, Declined> = run(
            &store,
            options,
            Some("k".into()),
            Ok(fingerprint),
            ReplayErr(|_| true),
            body,
        )
        .await;
        match (kind, &got) {
            (OutcomeKind::Ok, Ok(n)) => {
                assert_eq!(serde_json::from_slice::<u64>(bytes).ok(), Some(*n))
            }
            (OutcomeKind::Err, Err(Declined::Reasons(r))) => {
                assert_eq!(
                    serde_json::from_slice::<Declined>(bytes).ok().as_ref(),
                    Some(&Declined::Reasons(r.clone()))
                )
            }
            (_, Err(Declined::Idem(codec))) => assert!(codec, "only a codec error is possible"),
            other => panic!("unexpected {other:?}"),
        }
        match store.get(&key).await.unwrap() {
            Some(Record::Completed { outcome, .. }) => assert_eq!(outcome, stored),
            other => panic!("the record changed: {other:?}"),
        }
    });
});

/// An error type whose declines are stored and replayed; idem's own errors are kept apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Declined {
    Reasons(Vec<String>),
    /// idem's own error: `true` for `Error::Codec`.
    #[serde(skip)]
    Idem(bool),
}

impl From<Error> for Declined {
    fn from(err: Error) -> Self {
        Declined::Idem(matches!(err, Error::Codec(_)))
    }
}
