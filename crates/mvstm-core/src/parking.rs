//! Blocking in `retry` without losing a wake-up.
//!
//! A retrying thread registers itself on every variable it waits on *before* it checks whether
//! they changed, and a committing writer checks for waiters *after* it unlocks with the new
//! stamp:
//!
//! ```text
//! waiter:  insert in wait table; waiters.fetch_add (SeqCst); load lock word (SeqCst); park
//! writer:  lock word swap to unlocked(wv) (SeqCst); load waiters (SeqCst); unpark matches
//! ```
//!
//! In the single total order of `SeqCst` operations, either the waiter's load sees the new stamp
//! (it does not park) or the writer's load sees the registration (it unparks the waiter; an
//! unpark that comes before the park makes the park return at once). This is the
//! register-then-revalidate order whose absence lost wake-ups in CCSTM (PITFALLS 4).
//!
//! Waiters live in a global table of mutex-protected shards keyed by the variable's address, so
//! a TVar carries only a counter, and a writer of a variable nobody waits on pays one load. A
//! waiter removes every entry it made when it stops waiting, woken or not (PITFALLS 12), and
//! keeps the variables alive meanwhile with strong references.

use crate::error::StmResult;
use crate::log::ReadEntry;
use crate::sync::Ordering;
use crate::tvar::{ErasedRef, Header};
use crate::txn::Txn;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::thread::Thread;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

struct Entry {
    addr: usize,
    thread: Thread,
    /// Identifies the registration, so a waiter removes exactly its own entries.
    ticket: u64,
}

static TABLE: [Mutex<Vec<Entry>>; SHARDS] = [const { Mutex::new(Vec::new()) }; SHARDS];

fn shard(addr: usize) -> &'static Mutex<Vec<Entry>> {
    // Fibonacci hashing of the address; headers are at least 8-byte aligned.
    &TABLE[(addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) % SHARDS]
}

/// Wake the threads waiting on `header`; called by a writer right after it unlocked it.
#[inline]
pub(crate) fn wake_if_waited(header: &Header) {
    // SeqCst: see the module docs.
    if header.waiters.load(Ordering::SeqCst) != 0 {
        wake(header as *const Header as usize);
    }
}

#[cold]
fn wake(addr: usize) {
    for e in shard(addr).lock().iter().filter(|e| e.addr == addr) {
        e.thread.unpark();
    }
}

/// A `retry_until` predicate.
pub(crate) type Predicate = Box<dyn Fn(&mut Txn) -> StmResult<bool>>;

/// What an attempt that retried waits for; filled in by the retry variants.
#[derive(Default)]
pub(crate) struct WaitSpec {
    /// Wait on everything the attempt read (`retry`, `retry_for`).
    pub(crate) on_reads: bool,
    /// `retry_on`: wake when any of these changed.
    pub(crate) any: SmallVec<[ReadEntry; 4]>,
    /// `retry_all`: wake when all of a group changed.
    pub(crate) all: Vec<SmallVec<[ReadEntry; 4]>>,
    /// `retry_until`: wake when any of a group changed and the predicate holds.
    pub(crate) until: Vec<(SmallVec<[ReadEntry; 4]>, Predicate)>,
    /// `retry_for`: stop waiting after this long.
    pub(crate) timeout: Option<Duration>,
}

impl WaitSpec {
    pub(crate) fn clear(&mut self) {
        self.on_reads = false;
        self.any.clear();
        self.all.clear();
        self.until.clear();
        self.timeout = None;
    }
}

/// A variable being waited on, with the stamp the attempt saw.
struct Watched {
    var: ErasedRef,
    stamp: u64,
}

impl Watched {
    /// The stamp of the variable's newest version.
    fn current(&self) -> u64 {
        // SeqCst load: the Dekker argument of the module docs.
        let word = self.var.header().lock.load();
        if !word.is_locked() {
            return word.stamp();
        }
        // Locked by a committer: its lock CAS read the last unlock (a release sequence), so the
        // head we load now is at least the version that unlock published. A commit still in
        // flight will wake us when it unlocks.
        self.var.head_stamp()
    }

    fn changed(&self) -> bool {
        self.current() != self.stamp
    }
}

/// The registered wait of one retry: conditions plus the table entries that keep it wakeable.
pub(crate) struct Wait {
    any: Vec<Watched>,
    all: Vec<Vec<Watched>>,
    until: Vec<(Vec<Watched>, Predicate)>,
    timeout: Option<Duration>,
    /// Some waited variable was already dropped by every handle: do not park.
    gone: bool,
    registered: SmallVec<[ErasedRef; 8]>,
    ticket: u64,
}

impl Wait {
    /// Register on every variable of `spec` (plus `reads` if asked). Must run while the attempt
    /// is still pinned, since the logged headers are only guaranteed live until it unpins.
    pub(crate) fn register(spec: &mut WaitSpec, reads: &[ReadEntry]) -> Wait {
        static TICKETS: crate::sync::AtomicU64 = crate::sync::AtomicU64::new(1);
        let mut wait = Wait {
            any: Vec::new(),
            all: Vec::new(),
            until: Vec::new(),
            timeout: spec.timeout,
            gone: false,
            registered: SmallVec::new(),
            // Relaxed: a unique number is all we need.
            ticket: TICKETS.fetch_add(1, Ordering::Relaxed),
        };
        let watch = |entries: &[ReadEntry], wait: &mut Wait| -> Vec<Watched> {
            entries
                .iter()
                .filter_map(|e| {
                    // SAFETY: the attempt is still pinned and logged `e.header`.
                    match unsafe { ErasedRef::upgrade(e.header) } {
                        Some(var) => Some(Watched {
                            var,
                            stamp: e.stamp,
                        }),
                        None => {
                            wait.gone = true;
                            None
                        }
                    }
                })
                .collect()
        };
        if spec.on_reads {
            wait.any = watch(reads, &mut wait);
        }
        let any = watch(&spec.any, &mut wait);
        wait.any.extend(any);
        for group in std::mem::take(&mut spec.all) {
            let watched = watch(&group, &mut wait);
            wait.all.push(watched);
        }
        for (group, predicate) in std::mem::take(&mut spec.until) {
            let watched = watch(&group, &mut wait);
            wait.until.push((watched, predicate));
        }
        spec.clear();
        wait.register_all();
        wait
    }

    fn register_all(&mut self) {
        let mut addrs: SmallVec<[(usize, &ErasedRef); 8]> = SmallVec::new();
        let vars = self
            .any
            .iter()
            .chain(self.all.iter().flatten())
            .chain(self.until.iter().flat_map(|(g, _)| g.iter()));
        for w in vars {
            addrs.push((w.var.addr(), &w.var));
        }
        addrs.sort_unstable_by_key(|a| a.0);
        addrs.dedup_by_key(|a| a.0);
        let thread = std::thread::current();
        let mut registered = SmallVec::new();
        for (addr, var) in addrs {
            shard(addr).lock().push(Entry {
                addr,
                thread: thread.clone(),
                ticket: self.ticket,
            });
            // SeqCst: see the module docs; after the table insert, so a writer that sees the
            // count finds the entry.
            var.header().waiters.fetch_add(1, Ordering::SeqCst);
            registered.push(var.clone());
        }
        self.registered = registered;
    }

    /// Whether there is nothing that could ever end this wait.
    pub(crate) fn is_endless_and_empty(&self) -> bool {
        self.registered.is_empty() && self.timeout.is_none() && !self.gone
    }

    /// Park until a condition holds or the timeout passes; returns the time spent.
    pub(crate) fn block(mut self) -> Duration {
        let start = Instant::now();
        let deadline = self.timeout.map(|t| start + t);
        while !self.gone && !self.satisfied() {
            match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    std::thread::park_timeout(deadline - now);
                }
                None => std::thread::park(),
            }
        }
        start.elapsed()
    }

    fn satisfied(&mut self) -> bool {
        if self.any.iter().any(Watched::changed) {
            return true;
        }
        if self.all.iter().any(|g| g.iter().all(Watched::changed)) {
            return true;
        }
        for (group, predicate) in &mut self.until {
            if group.iter().any(Watched::changed) {
                if crate::runtime::evaluate_predicate(predicate) {
                    return true;
                }
                // Not yet: wait for the next change from here.
                for w in group.iter_mut() {
                    w.stamp = w.current();
                }
            }
        }
        false
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        for var in &self.registered {
            let addr = var.addr();
            shard(addr)
                .lock()
                .retain(|e| !(e.addr == addr && e.ticket == self.ticket));
            // Relaxed: the count only gates whether writers look in the table; a stale non-zero
            // costs a writer one shard lookup.
            var.header().waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
