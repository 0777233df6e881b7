//! Zombie transactions (PITFALLS 1): an attempt that will abort must still see one consistent
//! state, or it can panic or loop forever on a torn view before anything aborts it.
//!
//! Writers keep two invariants in every commit: `x < y <= x + GAP`, and `p == q`. Readers index
//! a `GAP`-long slice with `y - x - 1` (any view mixing two commits is out of bounds, see
//! `writer`) and loop re-reading while `p != q` (a torn view would spin there forever). Some
//! readers are read-only; others write first, so that their reads take the paths of update
//! attempts (snapshot extension, doomed attempts). Readers pause between their reads to widen
//! the window in which a writer commits. A panic fails the test; a hang fails it after a limit.
//!
//! Three million transactions per run; `MVSTM_LONG=1` runs twenty times as many.

mod common;

use common::{finish_within, spawn_reporting, Rng};
use mvstm::{atomically, StmResult, TVar, Txn};
use std::thread;
use std::time::{Duration, Instant};

/// The slice readers index: a consistent view gives an index in `0..GAP`.
const GAP: u64 = 16;
const SLOTS: [u64; GAP as usize] = [7; GAP as usize];

const WRITERS: usize = 2;
const WRITES_PER_WRITER: usize = 400_000;
/// Readers of each kind (read-only, writing first).
const READERS: usize = 1;
const READS_PER_READER: usize = 1_100_000;
const LONG_FACTOR: usize = 20;

fn scale() -> usize {
    if std::env::var_os("MVSTM_LONG").is_some_and(|v| v != "0") {
        LONG_FACTOR
    } else {
        1
    }
}

#[derive(Clone)]
struct Vars {
    x: TVar<u64>,
    y: TVar<u64>,
    p: TVar<u64>,
    q: TVar<u64>,
}

/// The next `(x, y)` after `old_y`: `x` moves past the old `y` by at least `GAP` and `y` lands
/// within `GAP` above it. So a view with a newer `x` and an older `y` has `x >= y` (and
/// `y - x - 1` wraps around), and a view with an older `x` and a newer `y` has `y - x > GAP`:
/// every torn view indexes out of bounds (`every_torn_view_is_out_of_bounds`).
fn step(old_y: u64, rng: &mut Rng) -> (u64, u64) {
    let jump = GAP + rng.below(GAP as usize) as u64;
    let width = 1 + rng.below(GAP as usize) as u64;
    let x = old_y + jump;
    (x, x + width)
}

/// The index a reader computes from a view of `x` and `y`.
fn index(x: u64, y: u64) -> usize {
    // Wrapping, so that a torn view is an index out of bounds in every build profile.
    y.wrapping_sub(x).wrapping_sub(1) as usize
}

fn writer(v: Vars, n: usize, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut attempts = 0;
    for _ in 0..n {
        let next = rng.next();
        atomically(|tx| {
            attempts += 1;
            // The same step on every attempt of this transaction.
            let (x, y) = step(tx.read(&v.y)?, &mut Rng(next | 1));
            tx.write(&v.x, x)?;
            tx.write(&v.y, y)?;
            let p = tx.read(&v.p)?;
            tx.write(&v.p, p + 1)?;
            tx.write(&v.q, p + 1)
        });
    }
    attempts
}

/// A short random pause (now and then a yield) between two reads.
fn pause(rng: &mut Rng) {
    let spins = rng.below(64);
    for _ in 0..spins {
        std::hint::spin_loop();
    }
    if rng.below(256) == 0 {
        thread::yield_now();
    }
}

/// Read `x` and `y` (in either order) and index the slice with `y - x - 1`; then read `p` and
/// `q` and re-read them while they differ.
fn look(tx: &mut Txn, v: &Vars, y_first: bool, rng: &mut Rng) -> StmResult<u64> {
    let (x, y) = if y_first {
        let y = tx.read(&v.y)?;
        pause(rng);
        (tx.read(&v.x)?, y)
    } else {
        let x = tx.read(&v.x)?;
        pause(rng);
        (x, tx.read(&v.y)?)
    };
    let slot = SLOTS[index(x, y)];
    let mut p = tx.read(&v.p)?;
    pause(rng);
    let mut q = tx.read(&v.q)?;
    while p != q {
        p = tx.read(&v.p)?;
        q = tx.read(&v.q)?;
    }
    Ok(slot + p)
}

/// `writes_first`: the reader bumps its own counter before looking, so its attempts are
/// update attempts.
fn reader(v: Vars, n: usize, seed: u64, writes_first: bool) -> u64 {
    let mut rng = Rng(seed);
    let own = TVar::new(0u64);
    let mut attempts = 0;
    for i in 0..n {
        atomically(|tx| {
            attempts += 1;
            if writes_first {
                tx.modify(&own, |c| c + 1)?;
            }
            look(tx, &v, i % 2 == 1, &mut rng)
        });
    }
    if writes_first {
        assert_eq!(own.load(), n as u64);
    }
    attempts
}

#[test]
fn no_attempt_sees_a_torn_state_so_none_panics_or_hangs() {
    let scale = scale();
    let limit = Duration::from_secs(120 * scale as u64);
    let v = Vars {
        x: TVar::new(0),
        y: TVar::new(1),
        p: TVar::new(0),
        q: TVar::new(0),
    };
    let began = Instant::now();
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let v = v.clone();
        let n = WRITES_PER_WRITER * scale;
        threads.push((
            "writer",
            n,
            spawn_reporting(move || writer(v, n, 11 + w as u64)),
        ));
    }
    for r in 0..READERS * 2 {
        let v = v.clone();
        let n = READS_PER_READER * scale;
        let writes_first = r % 2 == 1;
        let rx = spawn_reporting(move || reader(v, n, 101 + r as u64, writes_first));
        let kind = if writes_first {
            "reader (writes first)"
        } else {
            "reader (read-only)"
        };
        threads.push((kind, n, rx));
    }
    let mut transactions = 0;
    for (kind, n, rx) in &threads {
        let left = limit.saturating_sub(began.elapsed());
        let attempts = finish_within(rx, kind, left);
        println!("{kind}: {n} transactions, {attempts} attempts");
        transactions += n;
    }
    let (x, y, p, q) = (v.x.load(), v.y.load(), v.p.load(), v.q.load());
    assert!(x < y && y <= x + GAP, "x = {x}, y = {y}");
    assert_eq!(p, (WRITERS * WRITES_PER_WRITER * scale) as u64);
    assert_eq!(p, q);
    assert!(transactions >= 1_000_000);
    println!("{transactions} transactions in {:.1?}", began.elapsed());
}

#[test]
fn every_torn_view_is_out_of_bounds() {
    let mut rng = Rng(5);
    let mut states = vec![(0u64, 1u64)];
    for _ in 0..1_000 {
        let (_, y) = *states.last().unwrap();
        states.push(step(y, &mut rng));
    }
    for (i, &(x, y)) in states.iter().enumerate() {
        assert!(index(x, y) < SLOTS.len(), "a consistent view is in bounds");
        for (j, &(_, other_y)) in states.iter().enumerate() {
            if i != j {
                assert!(index(x, other_y) >= SLOTS.len(), "x of {i}, y of {j}");
            }
        }
    }
}
