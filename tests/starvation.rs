//! The starvation escape: a long update transaction over 1,000 TVars commits against two threads
//! that keep committing short transactions on the same TVars, within a bounded number of
//! attempts, and the test prints how many it took.
//!
//! In its own test binary (process): the priority token is process-wide, so other stress tests
//! running beside it would compete for the token and the CPU and blur what is measured here.

mod common;

use common::Rng;
use mvstm::{atomically, TVar};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

#[test]
fn long_update_transaction_commits_against_a_storm_of_short_ones() {
    const VARS: usize = 1_000;
    let vars: Arc<Vec<TVar<u64>>> = Arc::new((0..VARS).map(|_| TVar::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let short = Arc::new(AtomicUsize::new(0));
    let hammers: Vec<_> = (0..2)
        .map(|seed| {
            let (vars, done, short) = (vars.clone(), done.clone(), short.clone());
            thread::spawn(move || {
                let mut rng = Rng(seed + 3);
                while !done.load(Ordering::Relaxed) {
                    let i = rng.below(VARS);
                    atomically(|tx| tx.modify(&vars[i], |v| v + 1));
                    short.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Start once the storm is on.
    while short.load(Ordering::Relaxed) < 1_000 {
        thread::yield_now();
    }
    let mut worst = 0;
    for _ in 0..5 {
        let mut attempts = 0;
        let before = short.load(Ordering::Relaxed);
        atomically(|tx| {
            attempts = tx.attempt();
            // Read and write every variable, slowly: every short transaction conflicts with it.
            for v in vars.iter() {
                let x = tx.read(v)?;
                for _ in 0..20 {
                    std::hint::spin_loop();
                }
                tx.write(v, x + 1)?;
            }
            Ok(())
        });
        let during = short.load(Ordering::Relaxed) - before;
        worst = worst.max(attempts);
        println!(
            "long transaction over {VARS} TVars committed after {attempts} attempts \
             ({during} short commits meanwhile)"
        );
    }
    done.store(true, Ordering::Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
    // The starvation escape takes priority after 8 conflicts; a few committers that passed the
    // gate before can still win once each.
    assert!(worst <= 32, "the long transaction needed {worst} attempts");
    let total: u64 = vars.iter().map(TVar::load).sum();
    assert_eq!(
        total,
        short.load(Ordering::Relaxed) as u64 + 5 * VARS as u64,
        "lost update"
    );
}

#[test]
fn on_abort_hooks_run_without_the_priority_token() {
    // Eight forced conflicts give the transaction the priority token, which holds every other
    // committer at the gate. An `on_abort` hook that waits for another thread's update
    // transaction must still see it commit: hooks never run while the token is held.
    let (x, y) = (TVar::new(0u64), TVar::new(0u64));
    let hook_saw_commit = Arc::new(AtomicBool::new(false));
    let r: Result<(), &str> = mvstm::try_atomically(|tx| {
        let v = tx.read(&x)?;
        if tx.attempt() <= 8 {
            let x2 = x.clone();
            thread::spawn(move || atomically(|tx| tx.modify(&x2, |n| n + 1)))
                .join()
                .unwrap();
            return tx.write(&x, v + 100);
        }
        let (y2, saw) = (y.clone(), hook_saw_commit.clone());
        tx.on_abort(move |_| {
            let worker = thread::spawn(move || atomically(|tx| tx.modify(&y2, |n| n + 1)));
            let start = std::time::Instant::now();
            while !worker.is_finished() && start.elapsed() < std::time::Duration::from_secs(10) {
                thread::sleep(std::time::Duration::from_millis(1));
            }
            saw.store(worker.is_finished(), Ordering::SeqCst);
        });
        tx.abort("stop")
    });
    assert_eq!(r, Err("stop"));
    assert!(
        hook_saw_commit.load(Ordering::SeqCst),
        "the hook's worker was held at the gate"
    );
    assert_eq!(y.load(), 1);
}

/// The priority token holds every other committer at the gate, so it must not be held while its
/// holder runs `on_commit` hooks, which may block (a database call). A transaction made to
/// conflict until it takes the token sits in its `on_commit` hook; a writer of unrelated
/// variables commits meanwhile.
#[test]
fn the_priority_holder_does_not_hold_the_gate_through_its_on_commit_hooks() {
    let (contended, own, unrelated) = (TVar::new(0u64), TVar::new(0u64), TVar::new(0u64));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (sitting_tx, sitting_rx) = mpsc::channel::<u32>();
    let (c, o) = (contended.clone(), own.clone());
    let holder = thread::spawn(move || {
        let release_rx = Arc::new(Mutex::new(release_rx));
        atomically(|tx| {
            let seen = tx.read(&c)?;
            // Eight forced conflicts (a commit to what the attempt read) give the call the
            // priority token; from then on nothing may wait for another writer here.
            if tx.attempt() <= 8 {
                let c2 = c.clone();
                thread::spawn(move || atomically(|tx| tx.modify(&c2, |n| n + 1)))
                    .join()
                    .unwrap();
            } else {
                let (release_rx, sitting_tx, attempt) =
                    (release_rx.clone(), sitting_tx.clone(), tx.attempt());
                tx.on_commit(move || {
                    let _ = sitting_tx.send(attempt);
                    let _ = release_rx.lock().unwrap().recv();
                });
            }
            tx.write(&o, seen)
        });
    });
    let attempt = sitting_rx
        .recv_timeout(common::LIMIT)
        .expect("the holder never reached its on_commit hook");
    assert!(
        attempt > 8,
        "the holder's earlier attempts did not conflict"
    );
    let u = unrelated.clone();
    let writer = common::spawn_reporting(move || atomically(|tx| tx.modify(&u, |n| n + 1)));
    common::finish(
        &writer,
        "a writer while the priority holder sits in on_commit",
    );
    drop(release_tx);
    holder.join().unwrap();
    assert_eq!((unrelated.load(), own.load()), (1, 8));
}
