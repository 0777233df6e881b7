//! Helpers shared by the integration tests: bounded waits on other threads, panic messages,
//! values that count their drops, a driver for deferred reclamation, and a tiny generator.
//!
//! Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use mvstm::{atomically, TVar};
use std::any::{Any, TypeId};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Serializes the measuring tests of one test binary (the harness runs tests on parallel
/// threads, and the priority token and the epoch are process-wide, so a contended test beside a
/// measuring one would skew it).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a test waits for something that should happen at once before it fails.
pub const LIMIT: Duration = Duration::from_secs(10);
/// How long a test watches a blocked thread to check that it stays blocked.
pub const QUIET: Duration = Duration::from_millis(100);

/// The text of a panic payload (`&str` or `String`), for failure messages.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Run `f` on a new thread; its result (or its panic) arrives on the returned channel.
pub fn spawn_reporting<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> mpsc::Receiver<thread::Result<T>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    rx
}

/// The result of a thread from `spawn_reporting`, failing the test if it takes too long.
pub fn finish<T>(rx: &mpsc::Receiver<thread::Result<T>>, what: &str) -> T {
    finish_within(rx, what, LIMIT)
}

/// Like [`finish`], for a thread expected to run for a while: fail after `limit`.
pub fn finish_within<T>(rx: &mpsc::Receiver<thread::Result<T>>, what: &str, limit: Duration) -> T {
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => panic!("{what}: the thread panicked: {}", panic_message(&*p)),
        Err(_) => panic!("{what}: still running after {limit:?}"),
    }
}

/// Check that a thread from `spawn_reporting` has not finished yet.
pub fn still_blocked<T>(rx: &mpsc::Receiver<thread::Result<T>>, what: &str) {
    match rx.try_recv() {
        Err(mpsc::TryRecvError::Empty) => {}
        Ok(Ok(_)) => panic!("{what}: returned while it should still be blocked"),
        Ok(Err(p)) => panic!("{what}: panicked: {}", panic_message(&*p)),
        Err(mpsc::TryRecvError::Disconnected) => panic!("{what}: the thread vanished"),
    }
}

/// Run `f` on another thread and wait for it, failing the test if it does not finish in time
/// (for instance because a lock was left held).
pub fn on_other_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    finish(&spawn_reporting(f), "the other thread (a lock left held?)")
}

/// Wait (bounded) until `counter` reaches `n`: a blocked thread ran its body that often.
pub fn wait_for_runs(counter: &AtomicUsize, n: usize) {
    let start = Instant::now();
    while counter.load(Ordering::SeqCst) < n {
        assert!(start.elapsed() < LIMIT, "the body never ran {n} times");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Counts the live [`Counted`] values made from it, and notices a value dropped twice.
#[derive(Clone, Default)]
pub struct DropCounter {
    live: Arc<AtomicIsize>,
    double_drop: Arc<AtomicBool>,
}

impl DropCounter {
    pub fn new() -> DropCounter {
        DropCounter::default()
    }

    /// A new counted value tagged `id`.
    pub fn value(&self, id: u64) -> Counted {
        self.live.fetch_add(1, Ordering::SeqCst);
        Counted {
            counter: self.clone(),
            id,
        }
    }

    pub fn live(&self) -> isize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn dropped_twice(&self) -> bool {
        self.double_drop.load(Ordering::SeqCst)
    }

    /// Drive deferred reclamation until every value is dropped; fail if one was dropped twice
    /// or some stay alive.
    pub fn assert_all_dropped(&self, what: &str) {
        let freed = drive_reclamation(|| self.live() == 0);
        assert!(
            !self.double_drop.load(Ordering::SeqCst),
            "{what}: a value was dropped twice"
        );
        assert!(
            freed,
            "{what}: {} values still live after driving reclamation",
            self.live()
        );
    }
}

/// A value that counts itself in its [`DropCounter`] while alive.
pub struct Counted {
    counter: DropCounter,
    pub id: u64,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.counter.value(self.id)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.counter.live.fetch_sub(1, Ordering::SeqCst) <= 0 {
            self.counter.double_drop.store(true, Ordering::SeqCst);
        }
    }
}

/// Bound on the rounds that wait for deferred reclamation to catch up. Reclamation goes through
/// crossbeam-epoch, which stalls while any thread stays pinned (say, one descheduled on a busy
/// machine), so the loop also sleeps now and then.
const RECLAIM_ROUNDS: usize = 100_000;
const RECLAIM_SLEEP_EVERY: usize = 500;

/// Commit transactions on an unrelated variable until `done` holds or the bound is reached;
/// returns whether `done` held. Each commit pins, and every so often a commit advances the
/// reclamation horizon and hands deferred frees to the epoch collector.
pub fn drive_reclamation(mut done: impl FnMut() -> bool) -> bool {
    let scratch = TVar::new(0u64);
    for round in 1..=RECLAIM_ROUNDS {
        if done() {
            return true;
        }
        atomically(|tx| tx.modify(&scratch, |x| x + 1));
        if round % RECLAIM_SLEEP_EVERY == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    done()
}

/// Run `f` on a thread that then exits. A thread's exit hands every free it deferred to the
/// global queue, so exactly-once checks do not depend on when a living thread flushes its own.
pub fn on_exiting_thread(f: impl FnOnce() + Send + 'static) {
    let handle = thread::spawn(f);
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the helper thread did not finish"
        );
        thread::sleep(Duration::from_millis(1));
    }
    handle.join().expect("the helper thread did not panic");
}

/// A tiny deterministic generator (xorshift), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Keep the default panic message for every panic except those whose payload is a `P`: tests
/// that inject thousands of panics on purpose would otherwise flood the output. Other panics,
/// assertion failures included, still print as usual.
pub fn silence_panics_of<P: Any>() {
    type Filter = fn(&(dyn Any + Send)) -> bool;
    static SILENCED: Mutex<Vec<(TypeId, Filter)>> = Mutex::new(Vec::new());
    static INSTALL: std::sync::Once = std::sync::Once::new();
    fn is<P: Any>(payload: &(dyn Any + Send)) -> bool {
        payload.is::<P>()
    }
    let mut silenced = SILENCED.lock().unwrap_or_else(|p| p.into_inner());
    if !silenced.iter().any(|(id, _)| *id == TypeId::of::<P>()) {
        silenced.push((TypeId::of::<P>(), is::<P>));
    }
    drop(silenced);
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = SILENCED
                .lock()
                .map(|s| s.iter().any(|(_, is)| is(info.payload())))
                .unwrap_or(false);
            if !quiet {
                default(info);
            }
        }));
    });
}

/// The `hash` of ScalaSTM's `HistogramSuite`, for its ports (`tests/peer_collections.rs`,
/// `tests/single_ops.rs`), so they pick the same buckets as the original.
pub fn scala_hash(i: i32, j: i32) -> i32 {
    let mut h = i.wrapping_mul(37).wrapping_add(j.wrapping_mul(101));
    h ^= ((h as u32) >> 20) as i32 ^ ((h as u32) >> 12) as i32;
    h ^ ((h as u32) >> 7) as i32 ^ ((h as u32) >> 4) as i32
}
