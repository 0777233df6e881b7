//! Locks shared across processes: all or none, refused resources named, sharing owners,
//! guards that release, blocking with a timeout, lease expiry with fencing tokens, and
//! hostile resource names.

mod common;

use common::{backends, unique};
use mvstm::durable::{Error, Store, Wait};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn all_or_none_and_refusals_name_the_resources() {
    for (db, url) in backends("locks-all-or-none") {
        let locks = Store::open(&url).unwrap().locks().unwrap();
        let (a, b, c) = (unique("a"), unique("b"), unique("c"));
        let held = locks
            .lock(&[&a, &b], "alice", &[], Wait::NoWait, LONG)
            .unwrap();
        let e = locks
            .lock(&[&c, &b, &a], "bob", &[], Wait::NoWait, LONG)
            .unwrap_err();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        assert_eq!(
            e,
            Error::LockRefused {
                resources: expected
            },
            "{db}"
        );
        assert!(e.is_refused());
        assert!(
            e.to_string().contains(&a) && e.to_string().contains(&b),
            "{e}"
        );
        // All or none: `c` was not taken by the refused call.
        assert!(locks.holders(&c).unwrap().is_empty(), "{db}");
        drop(held);
        let g = locks
            .lock(&[&c, &b, &a], "bob", &[], Wait::NoWait, LONG)
            .unwrap();
        assert_eq!(g.tokens().len(), 3);
        assert_eq!(locks.holders(&a).unwrap()[0].0, "bob");
    }
}

#[test]
fn owners_share_only_by_mutual_consent() {
    for (db, url) in backends("locks-sharing") {
        let locks = Store::open(&url).unwrap().locks().unwrap();
        let r = unique("shared");
        let p1 = locks
            .lock(&[&r], "pid-1", &["pid-2"], Wait::NoWait, LONG)
            .unwrap();
        // pid-3 is not named by pid-1.
        assert!(locks
            .lock(&[&r], "pid-3", &["pid-1"], Wait::NoWait, LONG)
            .unwrap_err()
            .is_refused());
        // pid-2 is named by pid-1 but does not name pid-1 itself.
        assert!(locks
            .lock(&[&r], "pid-2", &[], Wait::NoWait, LONG)
            .unwrap_err()
            .is_refused());
        let p2 = locks
            .lock(&[&r], "pid-2", &["pid-1"], Wait::NoWait, LONG)
            .unwrap();
        let holders = locks.holders(&r).unwrap();
        assert_eq!(holders.len(), 2, "{db}");
        assert!(p2.token(&r) > p1.token(&r));
        p1.release().unwrap();
        p2.release().unwrap();
        assert!(locks.holders(&r).unwrap().is_empty(), "{db}");
    }
}

#[test]
fn blocking_waits_for_release_or_times_out() {
    for (db, url) in backends("locks-blocking") {
        let store = Store::open(&url).unwrap();
        let locks = store.locks().unwrap();
        let r = unique("blocking");
        let held = locks.lock(&[&r], "first", &[], Wait::NoWait, LONG).unwrap();
        let started = Instant::now();
        let e = locks
            .lock(
                &[&r],
                "second",
                &[],
                Wait::Block(Duration::from_millis(200)),
                LONG,
            )
            .unwrap_err();
        assert!(e.is_refused(), "{db}: {e:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(held);
        });
        let g = locks
            .lock(
                &[&r],
                "second",
                &[],
                Wait::Block(Duration::from_secs(10)),
                LONG,
            )
            .unwrap();
        releaser.join().unwrap();
        assert_eq!(g.owner(), "second");
    }
}

#[test]
fn an_expired_lease_is_taken_over_and_the_late_holder_is_fenced_off() {
    for (db, url) in backends("locks-fencing") {
        let locks = Store::open(&url).unwrap().locks().unwrap();
        let r = unique("fenced");
        let late = locks
            .lock(&[&r], "slow", &[], Wait::NoWait, Duration::from_millis(300))
            .unwrap();
        let old_token = late.token(&r).unwrap();
        late.check().unwrap();
        assert!(locks
            .lock(&[&r], "fast", &[], Wait::NoWait, LONG)
            .unwrap_err()
            .is_refused());
        std::thread::sleep(Duration::from_millis(450));
        // The lease ran out: the holder learns it before anyone else takes the lock.
        assert!(late.check().unwrap_err().is_stale(), "{db}");
        let taker = locks.lock(&[&r], "fast", &[], Wait::NoWait, LONG).unwrap();
        let new_token = taker.token(&r).unwrap();
        assert!(new_token > old_token, "{db}: tokens must grow");
        let e = late.renew(LONG).unwrap_err();
        assert_eq!(
            e,
            Error::LockLost {
                resource: r.clone(),
                token: old_token
            }
        );
        assert!(e.is_stale());
        assert!(late.release().unwrap_err().is_stale(), "{db}");
        // The late release did not touch the new holder's lock.
        taker.check().unwrap();
        assert_eq!(locks.holders(&r).unwrap(), vec![("fast".into(), new_token)]);
    }
}

#[test]
fn renewing_keeps_a_lease_alive() {
    for (db, url) in backends("locks-renew") {
        let locks = Store::open(&url).unwrap().locks().unwrap();
        let r = unique("renewed");
        let g = locks
            .lock(
                &[&r],
                "keeper",
                &[],
                Wait::NoWait,
                Duration::from_millis(1_000),
            )
            .unwrap();
        // Three renewals carry the lease past its first expiry.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(400));
            g.renew(Duration::from_millis(1_000)).unwrap();
        }
        assert!(
            locks
                .lock(&[&r], "other", &[], Wait::NoWait, LONG)
                .unwrap_err()
                .is_refused(),
            "{db}"
        );
        g.release().unwrap();
    }
}

#[test]
fn tokens_grow_across_owners_and_reopening() {
    for (db, url) in backends("locks-tokens") {
        let r = unique("counted");
        let mut last = 0;
        for round in 0..4 {
            let locks = Store::open(&url).unwrap().locks().unwrap();
            let g = locks
                .lock(&[&r], &format!("owner-{round}"), &[], Wait::NoWait, LONG)
                .unwrap();
            let t = g.token(&r).unwrap();
            assert!(t > last, "{db}: {t} after {last}");
            last = t;
        }
    }
}

#[test]
fn hostile_resource_names_are_bound_not_pasted() {
    for (db, url) in backends("locks-hostile") {
        let locks = Store::open(&url).unwrap().locks().unwrap();
        let prefix = unique("h");
        let names = [
            format!("{prefix}'; DROP TABLE mvstm_locks; --"),
            format!("{prefix}/Sets/\"Shared\"/My'Resource"),
            format!("{prefix}ünïcödé 🚀"),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let g = locks
            .lock(
                &refs,
                "o'wner\"; --",
                &["x'; DROP TABLE mvstm_lock_tokens; --"],
                Wait::NoWait,
                LONG,
            )
            .unwrap();
        for n in &names {
            assert_eq!(locks.holders(n).unwrap().len(), 1, "{db}: {n}");
        }
        g.release().unwrap();
        assert!(matches!(
            locks.lock(&[], "o", &[], Wait::NoWait, LONG),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            locks.lock(&[""], "o", &[], Wait::NoWait, LONG),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            locks.lock(&["fine"], "", &[], Wait::NoWait, LONG),
            Err(Error::Invalid { .. })
        ));
    }
}
