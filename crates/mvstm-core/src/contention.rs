//! Contention management: backoff after a conflict, and the starvation escape.
//!
//! Conflicts never reach the user; the runtime re-runs the body after a randomized exponential
//! backoff. Backoff alone does not stop a long transaction from losing forever against a storm
//! of short ones (ZIO measured 0.125 commits/s), so after [`STARVATION_LIMIT`] conflicts in one
//! `atomically` call a thread takes the *priority token*. While a thread holds it, every other
//! update transaction waits at the gate at the start of its commit, before it locks anything,
//! so the holder's reads stay valid and it commits within a few attempts: only committers that
//! passed the gate before the token was taken can still beat it, at most one commit each.
//!
//! The wait at the gate holds no lock, and the token is given back before the holder runs any
//! user code that may block: its `on_commit` hooks (the commit gives it back once its writes are
//! locked and its reads held, [`give_back`]), a blocking `retry`, hooks outside the transaction,
//! or its return. So the gate cannot deadlock, and a hook that blocks (a database call) does not
//! stall every other writer. The holder's body runs with the token: that is what it protects.
//! Read-only transactions never pass the gate.

use crate::sync::{spin_hint, thread_local, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::cell::Cell;

/// Conflicts in one `atomically` call before the thread asks for priority.
#[cfg(not(loom))]
pub(crate) const STARVATION_LIMIT: u32 = 8;
/// Under loom: two conflicts, so a model can reach the priority token.
#[cfg(loom)]
pub(crate) const STARVATION_LIMIT: u32 = 2;

/// Backoff stops doubling after this many conflicts.
#[cfg(not(loom))]
const BACKOFF_MAX_SHIFT: u32 = 10;
/// Under loom: at most one spin (a yield) of backoff.
#[cfg(loom)]
const BACKOFF_MAX_SHIFT: u32 = 1;

/// Backoff spins beyond which the thread yields instead.
#[cfg(not(loom))]
const YIELD_ABOVE_SPINS: u32 = 256;
/// Under loom a spin is already a yield.
#[cfg(loom)]
const YIELD_ABOVE_SPINS: u32 = 1;

crate::sync::global! {
    /// Owner of the priority token, or 0.
    static PRIORITY: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(0));
}

/// Wait while another thread holds the priority token.
#[inline]
pub(crate) fn wait_at_gate(owner: u64) {
    // Acquire: pairs with the holder's Release when it gives the token back, so its commit's
    // effects are ordered before ours (the lock words would order them anyway; this keeps the
    // gate's meaning independent of that).
    let holder = PRIORITY.load(Ordering::Acquire);
    if holder != 0 && holder != owner {
        wait_at_gate_slow(owner);
    }
}

#[cold]
fn wait_at_gate_slow(owner: u64) {
    let mut spins = 0u32;
    loop {
        // Acquire: as in `wait_at_gate`.
        let holder = PRIORITY.load(Ordering::Acquire);
        if holder == 0 || holder == owner {
            return;
        }
        if spins < YIELD_ABOVE_SPINS {
            spins += 1;
            spin_hint();
        } else {
            crate::sync::yield_now();
        }
    }
}

/// Give the token back if `owner` still holds it: the commit does so before it runs `on_commit`
/// hooks (user code that may block), and the call's own release comes later.
#[inline]
pub(crate) fn give_back(owner: u64) {
    // Release: our commit's effects happen-before the next gate passer's. A CAS, not a store:
    // once given back, the token may already belong to another thread.
    let _ = PRIORITY.compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed);
}

/// Per-`atomically` contention state.
pub(crate) struct Contention {
    owner: u64,
    conflicts: u32,
    holds_priority: bool,
}

impl Contention {
    #[inline]
    pub(crate) fn new(owner: u64) -> Self {
        Contention {
            owner,
            conflicts: 0,
            holds_priority: false,
        }
    }

    /// Called after a conflict: back off, or escalate to priority.
    pub(crate) fn on_conflict(&mut self) {
        self.conflicts += 1;
        if self.holds_priority {
            return;
        }
        if self.conflicts >= STARVATION_LIMIT
            && PRIORITY
                .compare_exchange(0, self.owner, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.holds_priority = true;
            return;
        }
        let shift = self.conflicts.min(BACKOFF_MAX_SHIFT);
        let spins = (next_random() as u32) & ((1u32 << shift) - 1);
        if spins > YIELD_ABOVE_SPINS {
            crate::sync::yield_now();
        } else {
            for _ in 0..spins {
                spin_hint();
            }
        }
    }

    /// Whether this call holds the priority token.
    #[inline]
    pub(crate) fn holds_priority(&self) -> bool {
        self.holds_priority
    }

    /// Give the token back (before blocking, running outside hooks or returning), unless the
    /// commit already did ([`give_back`]).
    #[inline]
    pub(crate) fn release(&mut self) {
        if self.holds_priority {
            give_back(self.owner);
            self.holds_priority = false;
        }
    }
}

impl Drop for Contention {
    #[inline]
    fn drop(&mut self) {
        self.release();
    }
}

/// A thread-local xorshift generator for backoff jitter.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Seeded by the state's address. A loom model must replay the same steps for the
            // same schedule, so there the seed is a constant.
            x = if cfg!(loom) {
                0x9E37_79B9_7F4A_7C15
            } else {
                (s as *const _ as u64) | 1
            };
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}
