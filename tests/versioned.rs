//! `Versioned`: updates against a model (proptest), and optimistic read-think-write loops from
//! several threads that lose no update and bump the version once per committed update.

use mvstm::atomically;
use mvstm::collections::{StaleVersion, Versioned};
use proptest::prelude::*;
use std::thread;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn updates_match_a_model(ops in prop::collection::vec((0u64..4, any::<u16>(), any::<bool>()), 1..40)) {
        let record = Versioned::new(0u16);
        let (mut value, mut version) = (0u16, 0u64);
        for (lag, new, unconditional) in ops {
            if unconditional {
                let v = atomically(|tx| record.modify(tx, |x| x.wrapping_add(new)));
                value = value.wrapping_add(new);
                version += 1;
                prop_assert_eq!(v, version);
            } else {
                // Name a version `lag` behind the current one (0: current).
                let expected = version.saturating_sub(lag);
                let got = atomically(|tx| record.update(tx, expected, new));
                if expected == version {
                    value = new;
                    version += 1;
                    prop_assert_eq!(got, Ok(version));
                } else {
                    prop_assert_eq!(got, Err(StaleVersion { expected, actual: version }));
                }
            }
            prop_assert_eq!(record.load(), (value, version));
        }
    }
}

#[test]
fn optimistic_loops_lose_no_update() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 2_000;
    let record = Versioned::new(0u64);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let record = record.clone();
            thread::spawn(move || {
                let mut stale = 0u64;
                for _ in 0..PER_THREAD {
                    loop {
                        let (value, version) = record.load(); // read, then "think"
                        std::hint::spin_loop();
                        match atomically(|tx| record.update(tx, version, value + 1)) {
                            Ok(_) => break,
                            Err(StaleVersion { expected, actual }) => {
                                assert!(actual > expected, "versions only grow");
                                stale += 1;
                            }
                        }
                    }
                }
                stale
            })
        })
        .collect();
    let stale: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let (value, version) = record.load();
    assert_eq!(value, THREADS * PER_THREAD, "an update was lost");
    assert_eq!(
        version,
        THREADS * PER_THREAD,
        "one version per committed update"
    );
    println!("{stale} stale saves were refused and retried");
}
