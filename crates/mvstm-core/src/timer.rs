//! One thread for the deadlines of every asynchronous wait in the process.
//!
//! A task waiting in `retry_for` (or `atomically_timeout_async`, or napping after it found a
//! waited variable locked, see `parking.rs`) must be polled again at a time, without a thread
//! blocked for it and without an executor's timer (the core depends on no executor). All such
//! deadlines go into one ordered map, `(deadline, id) -> task waker`, served by one thread
//! started on the first use: it wakes the tasks whose deadline passed and parks until the
//! earliest one left. A new deadline earlier than every other unparks it (an unpark that comes
//! before its park makes the park return at once, so none is missed).
//!
//! An entry is removed when it fires or when its wait ends first (`Wait`'s drop cancels it), so
//! a dropped future leaves nothing behind, and since a fired entry wakes through the task's
//! `TaskWaker` slot, which the wait empties when it ends, a deadline never wakes a dead task.
//! The cost is one lock and one map insertion per scheduled deadline, plus an unpark when it is
//! the new earliest; tokio's timer wheel is cheaper per entry, but async retries with a timeout
//! are rare next to commits, and this keeps executors out of the core.
//!
//! Under loom there is no time (`sync.rs`): a scheduled deadline wakes the task at once, as a
//! timed park there is a yield, and no thread is started.

use crate::sync::{Instant, Mutex};
#[cfg(any(loom, test))]
use std::sync::Arc;
use std::task::Waker;

/// The `Waker` of a waiting task, shared by its wait-table entries (`parking.rs`) and its timer
/// entry: replacing
/// it here re-targets all of them at once. Empty once the wait is over (see the module docs).
pub(crate) struct TaskWaker {
    waker: Mutex<Option<Waker>>,
}

impl TaskWaker {
    pub(crate) fn new(waker: Waker) -> TaskWaker {
        TaskWaker {
            waker: Mutex::new(Some(waker)),
        }
    }

    /// Wake the task, if its wait is still on. Under the slot's lock, so that no wake-up is
    /// issued once `clear` returned.
    pub(crate) fn wake(&self) {
        if let Some(waker) = &*self.waker.lock() {
            waker.wake_by_ref();
        }
    }

    /// Make `waker` the one woken, unless the one held already wakes the same task.
    pub(crate) fn set(&self, waker: &Waker) {
        let old = {
            let mut slot = self.waker.lock();
            match &*slot {
                Some(held) if held.will_wake(waker) => return,
                _ => slot.replace(waker.clone()),
            }
        };
        // Dropped outside the lock: dropping a waker may run executor code.
        drop(old);
    }

    /// End the wait: no wake-up is issued after this returns.
    pub(crate) fn clear(&self) {
        let old = self.waker.lock().take();
        drop(old);
    }
}

/// An entry of the timer, to cancel it; `at` is when it fires.
pub(crate) struct TimerKey {
    at: Instant,
    #[cfg_attr(loom, allow(dead_code))]
    id: u64,
}

impl TimerKey {
    /// When the entry fires.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }
}

#[cfg(not(loom))]
mod thread {
    use super::{TaskWaker, TimerKey};
    use parking_lot::Mutex;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::thread::Thread;
    use std::time::Instant;

    struct Timers {
        due: BTreeMap<(Instant, u64), Arc<TaskWaker>>,
        next_id: u64,
        /// The timer thread, once started.
        thread: Option<Thread>,
    }

    static TIMERS: Mutex<Timers> = Mutex::new(Timers {
        due: BTreeMap::new(),
        next_id: 0,
        thread: None,
    });

    pub(crate) fn schedule(at: Instant, waker: &Arc<TaskWaker>) -> TimerKey {
        let mut timers = TIMERS.lock();
        let id = timers.next_id;
        timers.next_id += 1;
        let earliest = timers
            .due
            .keys()
            .next()
            .is_none_or(|&(first, _)| at < first);
        timers.due.insert((at, id), waker.clone());
        let unpark = match &timers.thread {
            Some(thread) => earliest.then(|| thread.clone()),
            None => {
                // Started under the lock, so only one is; its first act is to take the lock.
                let handle = std::thread::Builder::new()
                    .name("mvstm-timer".into())
                    .spawn(serve)
                    .expect("mvstm: could not start the timer thread of async retry deadlines");
                timers.thread = Some(handle.thread().clone());
                None
            }
        };
        drop(timers);
        if let Some(thread) = unpark {
            thread.unpark();
        }
        TimerKey { at, id }
    }

    pub(crate) fn cancel(key: TimerKey) {
        let removed = TIMERS.lock().due.remove(&(key.at, key.id));
        // Dropped outside the lock (the last handle of a slot drops a waker: executor code).
        drop(removed);
    }

    /// Entries waiting to fire (for tests).
    #[cfg(test)]
    pub(crate) fn pending() -> usize {
        TIMERS.lock().due.len()
    }

    /// The timer thread: wake what is due, park until the earliest deadline left.
    fn serve() {
        loop {
            let (due, next) = {
                let mut timers = TIMERS.lock();
                let now = Instant::now();
                // Everything at or before `now` (ids are below `u64::MAX`).
                let later = timers.due.split_off(&(now, u64::MAX));
                let due = std::mem::replace(&mut timers.due, later);
                (due, timers.due.keys().next().map(|&(at, _)| at))
            };
            // Outside the lock: a wake-up runs executor code.
            for waker in due.into_values() {
                waker.wake();
            }
            match next {
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
use thread::pending;
#[cfg(not(loom))]
pub(crate) use thread::{cancel, schedule};

/// Under loom: a deadline "passes" at once (time does not move, a timed wait may end at any
/// point): wake the task now, and let it look again.
#[cfg(loom)]
pub(crate) fn schedule(at: Instant, waker: &Arc<TaskWaker>) -> TimerKey {
    waker.wake();
    TimerKey { at, id: 0 }
}

#[cfg(loom)]
pub(crate) fn cancel(_key: TimerKey) {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::task::{Wake, Waker};
    use std::time::Duration;

    /// When the waker was woken, if it was.
    struct Fired(Mutex<Option<Instant>>);
    impl Wake for Fired {
        fn wake(self: Arc<Self>) {
            self.0.lock().unwrap().get_or_insert_with(Instant::now);
        }
    }

    fn slot() -> (Arc<Fired>, Arc<TaskWaker>) {
        let fired = Arc::new(Fired(Mutex::new(None)));
        let waker = Waker::from(fired.clone());
        (fired, Arc::new(TaskWaker::new(waker)))
    }

    fn fired_at(fired: &Fired) -> Instant {
        let start = Instant::now();
        loop {
            if let Some(at) = *fired.0.lock().unwrap() {
                return at;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the timer never fired"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // One test, so no other test of this binary schedules meanwhile and `pending` is exact.
    #[test]
    fn deadlines_fire_not_before_their_time_and_cancelled_ones_never() {
        let (late, late_slot) = slot();
        let (early, early_slot) = slot();
        let (cancelled, cancelled_slot) = slot();
        let now = Instant::now();
        let deadlines = [
            now + Duration::from_millis(60),
            now + Duration::from_millis(20),
            now + Duration::from_millis(5),
        ];
        let _late = schedule(deadlines[0], &late_slot);
        let gone = schedule(deadlines[1], &cancelled_slot);
        // Earlier than every other: the thread parked until the first deadline must wake for it.
        let _early = schedule(deadlines[2], &early_slot);
        assert_eq!(pending(), 3);
        cancel(gone);
        assert_eq!(pending(), 2);
        assert!(
            fired_at(&early) >= deadlines[2],
            "fired before its deadline"
        );
        assert!(fired_at(&late) >= deadlines[0], "fired before its deadline");
        assert_eq!(pending(), 0, "fired entries stay in the map");
        // Every entry due before `late` fired with it or earlier: the cancelled one would have.
        assert!(
            cancelled.0.lock().unwrap().is_none(),
            "a cancelled entry fired"
        );
    }
}
