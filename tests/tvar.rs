//! `TVar` handles: construction, `load`, clones, `ptr_eq`, `Debug`/`Default`, read-your-writes,
//! `modify`/`replace`, non-`Copy` values, dropping handles, and that every value is dropped
//! exactly once (deferred reclamation eventually frees every version).

mod common;

use common::{drive_reclamation, on_exiting_thread, DropCounter};
use mvstm::{atomically, TVar};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

#[test]
fn new_and_load() {
    let v = TVar::new(41u64);
    assert_eq!(v.load(), 41);
    atomically(|tx| tx.write(&v, 42));
    assert_eq!(v.load(), 42);
}

#[test]
fn clone_names_the_same_variable() {
    let a = TVar::new(1i32);
    let b = a.clone();
    assert!(a.ptr_eq(&b));
    assert!(b.ptr_eq(&a));
    atomically(|tx| tx.write(&b, 2));
    assert_eq!(a.load(), 2);
    atomically(|tx| tx.write(&a, 3));
    assert_eq!(b.load(), 3);
}

#[test]
fn ptr_eq_distinguishes_variables_with_equal_values() {
    let a = TVar::new(7u8);
    let b = TVar::new(7u8);
    assert!(a.ptr_eq(&a));
    assert!(!a.ptr_eq(&b));
    assert!(!b.ptr_eq(&a));
    atomically(|tx| tx.write(&a, 8));
    assert_eq!((a.load(), b.load()), (8, 7));
}

#[test]
fn debug_shows_the_committed_value() {
    let v = TVar::new(12345i32);
    let shown = format!("{v:?}");
    assert!(shown.contains("TVar"), "{shown}");
    assert!(shown.contains("12345"), "{shown}");
    atomically(|tx| tx.write(&v, 777));
    let shown = format!("{v:?}");
    assert!(shown.contains("777") && !shown.contains("12345"), "{shown}");

    let s = TVar::new(String::from("hello"));
    assert!(format!("{s:?}").contains("\"hello\""));
}

#[test]
fn default_holds_the_default_value() {
    let n: TVar<u32> = TVar::default();
    let s: TVar<String> = TVar::default();
    let v: TVar<Vec<u8>> = Default::default();
    assert_eq!(n.load(), 0);
    assert_eq!(s.load(), "");
    assert!(v.load().is_empty());
    atomically(|tx| tx.write(&n, 5));
    assert_eq!(n.load(), 5);
}

#[test]
fn tvar_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TVar<u64>>();
    assert_send_sync::<TVar<String>>();
    assert_send_sync::<TVar<Vec<String>>>();
    assert_send_sync::<TVar<Arc<AtomicUsize>>>();
}

#[test]
fn read_your_writes() {
    let v = TVar::new(1i64);
    let seen = atomically(|tx| {
        let before = tx.read(&v)?;
        tx.write(&v, 2)?;
        let after_first = tx.read(&v)?;
        tx.write(&v, 3)?;
        let after_second = tx.read(&v)?;
        Ok((before, after_first, after_second))
    });
    assert_eq!(seen, (1, 2, 3));
    assert_eq!(v.load(), 3);
}

#[test]
fn modify_and_replace() {
    let v = TVar::new(10i64);
    atomically(|tx| tx.modify(&v, |x| x * 3));
    assert_eq!(v.load(), 30);

    let old = atomically(|tx| tx.replace(&v, 99));
    assert_eq!(old, 30);
    assert_eq!(v.load(), 99);

    // Several operations in one transaction compose in order.
    let (first, second) = atomically(|tx| {
        tx.modify(&v, |x| x + 1)?;
        let first = tx.replace(&v, 0)?;
        tx.modify(&v, |x| x - 5)?;
        let second = tx.replace(&v, 1)?;
        Ok((first, second))
    });
    assert_eq!((first, second), (100, -5));
    assert_eq!(v.load(), 1);
}

#[test]
fn load_inside_a_body_does_not_see_buffered_writes() {
    let v = TVar::new(String::from("committed"));
    let (loaded, read) = atomically(|tx| {
        tx.write(&v, String::from("buffered"))?;
        Ok((v.load(), tx.read(&v)?))
    });
    assert_eq!(loaded, "committed");
    assert_eq!(read, "buffered");
    assert_eq!(v.load(), "buffered");
}

#[test]
fn non_copy_values() {
    let s = TVar::new(String::from("a"));
    let v = TVar::new(vec![1u32, 2, 3]);
    atomically(|tx| {
        let mut text = tx.read(&s)?;
        text.push('b');
        tx.write(&s, text)?;
        tx.modify(&v, |mut xs| {
            xs.push(4);
            xs
        })
    });
    assert_eq!(s.load(), "ab");
    assert_eq!(v.load(), vec![1, 2, 3, 4]);

    // `read` hands out a clone: mutating it changes nothing until it is written back.
    let mut copy = atomically(|tx| tx.read(&v));
    copy.clear();
    assert_eq!(v.load(), vec![1, 2, 3, 4]);

    let old = atomically(|tx| tx.replace(&s, String::from("new")));
    assert_eq!(old, "ab");
    assert_eq!(s.load(), "new");
}

#[test]
fn dropping_a_handle_keeps_the_variable_alive_for_clones() {
    let original = TVar::new(vec![String::from("x")]);
    let clone = original.clone();
    let remote = original.clone();
    atomically(|tx| tx.write(&original, vec![String::from("y")]));
    drop(original);

    assert_eq!(clone.load(), vec![String::from("y")]);
    atomically(|tx| {
        tx.modify(&clone, |mut v| {
            v.push(String::from("z"));
            v
        })
    });

    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        atomically(|tx| {
            tx.modify(&remote, |mut v| {
                v.push(String::from("remote"));
                v
            })
        });
        let seen = remote.load();
        drop(remote);
        done_tx.send(seen).unwrap();
    });
    let seen = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the other thread finished");
    assert_eq!(seen, vec!["y", "z", "remote"]);
    assert_eq!(clone.load(), vec!["y", "z", "remote"]);
}

#[test]
fn values_are_dropped_exactly_once() {
    let drops = DropCounter::new();
    let v = TVar::new(drops.value(0));
    let other = v.clone();
    for i in 1..=5_000u64 {
        atomically(|tx| tx.write(&v, drops.value(i)));
    }
    // Reads hand out clones, which the caller drops.
    for _ in 0..100 {
        let c = atomically(|tx| tx.read(&v));
        assert_eq!(c.id, 5_000);
        let c = v.load();
        assert_eq!(c.id, 5_000);
    }
    // A transaction that writes and then aborts its attempt (panics) drops its pending value.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        atomically(|tx| -> mvstm::StmResult<()> {
            tx.write(&v, drops.value(9_999))?;
            panic!("discard the pending value")
        })
    }));
    assert!(r.is_err());
    assert_eq!(v.load().id, 5_000);
    assert!(drops.live() >= 1, "the newest value is still live");

    drop(v);
    assert_eq!(
        other.load().id,
        5_000,
        "a remaining clone keeps the variable"
    );
    on_exiting_thread(move || drop(other));
    drops.assert_all_dropped("after dropping the last handle");
}

#[test]
fn old_versions_are_reclaimed_while_the_variable_lives() {
    let drops = DropCounter::new();
    let v = TVar::new(drops.value(0));
    for i in 1..=10_000u64 {
        atomically(|tx| tx.write(&v, drops.value(i)));
    }
    // Keep overwriting: old versions are trimmed, so the number of live values comes back down
    // to a small bound (the versions newer than the reclamation horizon, which trails the clock
    // by some dozens of commits).
    let mut next = 10_001u64;
    let bounded = drive_reclamation(|| {
        atomically(|tx| tx.write(&v, drops.value(next)));
        next += 1;
        drops.live() <= 256
    });
    assert!(!drops.dropped_twice(), "a value was dropped twice");
    assert!(
        bounded,
        "{} values still live under constant overwrites of one TVar",
        drops.live()
    );
    assert_eq!(v.load().id, next - 1);
    on_exiting_thread(move || drop(v));
    drops.assert_all_dropped("after dropping the TVar");
}

#[test]
fn values_written_by_many_threads_are_dropped_exactly_once() {
    let drops = DropCounter::new();
    let v = TVar::new(drops.value(0));
    let (done_tx, done_rx) = mpsc::channel();
    for t in 0..2u64 {
        let (v, drops, done_tx) = (v.clone(), drops.clone(), done_tx.clone());
        thread::spawn(move || {
            for i in 0..2_000u64 {
                atomically(|tx| {
                    let old = tx.read(&v)?;
                    let id = old.id.max(t * 10_000 + i);
                    tx.write(&v, drops.value(id))
                });
            }
            drop(v);
            done_tx.send(()).unwrap();
        });
    }
    drop(done_tx);
    for _ in 0..2 {
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("writer thread finished");
    }
    on_exiting_thread(move || drop(v));
    drops.assert_all_dropped("after dropping the TVar");
}

#[test]
fn a_tvar_created_and_dropped_inside_a_body_is_freed() {
    let drops = DropCounter::new();
    let keep = TVar::new(0u32);
    {
        let (drops, keep) = (drops.clone(), keep.clone());
        on_exiting_thread(move || {
            for i in 0..200u64 {
                atomically(|tx| {
                    let temp = TVar::new(drops.value(i));
                    tx.write(&temp, drops.value(i + 1))?;
                    let seen = tx.read(&temp)?;
                    assert_eq!(seen.id, i + 1);
                    tx.modify(&keep, |x| x + 1)
                    // `temp` is dropped here, before the commit publishes its write.
                });
            }
        });
    }
    assert_eq!(keep.load(), 200);
    drops.assert_all_dropped("TVars dropped inside bodies");
}

#[test]
fn a_dropped_tvar_is_freed_while_its_thread_keeps_committing() {
    // A long-lived thread (say, a server worker) writes a TVar, drops it, and goes on running
    // transactions on other variables. The dropped variable's values must be freed eventually.
    let drops = DropCounter::new();
    let v = TVar::new(drops.value(0));
    for i in 1..=100u64 {
        atomically(|tx| tx.write(&v, drops.value(i)));
    }
    drop(v);
    drops.assert_all_dropped("after this thread dropped the TVar");
}

/// A value that counts its clones.
struct CountsClones(Arc<std::sync::atomic::AtomicUsize>, u64);

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CountsClones(self.0.clone(), self.1)
    }
}

/// `read_with` borrows: no clone of a committed value or of a buffered write, and it sees the
/// buffered write.
#[test]
fn read_with_borrows_the_committed_value_and_the_buffered_write() {
    let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let v = TVar::new(CountsClones(clones.clone(), 7));
    let seen = atomically(|tx| tx.read_with(&v, |c| c.1));
    assert_eq!(seen, 7);
    let (before, after) = atomically(|tx| {
        let before = tx.read_with(&v, |c| c.1)?;
        tx.write(&v, CountsClones(clones.clone(), 9))?;
        Ok((before, tx.read_with(&v, |c| c.1)?))
    });
    assert_eq!((before, after), (7, 9));
    assert_eq!(
        clones.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "read_with cloned the value"
    );
}

/// A read through `read_with` is validated like any read: a commit to it between the read and
/// the commit re-runs the body, and the re-run sees the new value.
#[test]
fn read_with_is_validated_at_commit() {
    let (v, out) = (TVar::new(1u64), TVar::new(0u64));
    let mut first = true;
    let runs = atomically(|tx| {
        let seen = tx.read_with(&v, |x| *x)?;
        if std::mem::take(&mut first) {
            let v2 = v.clone();
            std::thread::spawn(move || atomically(|tx| tx.write(&v2, 2)))
                .join()
                .unwrap();
        }
        tx.write(&out, seen)?;
        Ok(tx.attempt())
    });
    assert_eq!((runs, out.load()), (2, 2));
}

/// A `retry` after a `read_with` waits on what it read.
#[test]
fn retry_waits_on_what_read_with_read() {
    let flag = TVar::new(false);
    let f = flag.clone();
    let waiter = std::thread::spawn(move || {
        atomically(|tx| {
            if !tx.read_with(&f, |b| *b)? {
                return mvstm::retry();
            }
            Ok(tx.attempt())
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    atomically(|tx| tx.write(&flag, true));
    assert!(waiter.join().unwrap() >= 1);
}
