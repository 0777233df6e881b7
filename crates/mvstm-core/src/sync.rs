//! The one module that imports atomics, locks, thread-locals and thread primitives.
//!
//! Every other module of the engine takes them from here, so the whole engine can run under the
//! [loom](https://docs.rs/loom) model checker by swapping this module's imports (the pattern of
//! tokio's `src/loom/`). Epoch pinning goes through crossbeam-epoch, which switches to loom's
//! types itself under `--cfg crossbeam_loom`.
//!
//! | item | normal build | `--cfg loom` |
//! |---|---|---|
//! | atomics, `fence` | `std::sync::atomic` | `loom::sync::atomic` |
//! | [`Mutex`] | `parking_lot::Mutex` | a wrapper of `loom::sync::Mutex` with the same `lock` |
//! | `thread_local!` | std's | loom's (one value per modelled thread) |
//! | [`global!`] statics | a plain `static` | a `loom::lazy_static!` (an `Arc`), new in every execution |
//! | `current`, `park`, `Thread` | `std::thread` | `loom::thread` |
//! | [`park_timeout`] | `std::thread::park_timeout` | a yield: loom has no time, a timed wait is a wait that may end at any point |
//! | [`Instant`] | `std::time::Instant` | a clock that never moves: no deadline ever passes |
//! | [`spin_hint`] | `std::hint::spin_loop` | `loom::hint::spin_loop` (a yield) |
//! | [`seq_cst_point`] | nothing | `fence(SeqCst)`: loom models `SeqCst` accesses as `AcqRel` |
//! | `creation_number` | (absent) | numbers TVars, which are ordered by it instead of by address |
//!
//! Normal builds get exactly the std and parking_lot items, re-exported: no wrapper, no
//! indirection, and [`seq_cst_point`] compiles to nothing. Under loom, constants that bound
//! spinning and batching are shrunk where they are defined (`cfg(loom)` next to each), so a
//! model reaches every path in a few steps. `docs/loom.md` lists what else differs under loom
//! and why.

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "mvstm-core under loom needs crossbeam-epoch's loom support too: build with \
     RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\" (see scripts/loom.sh)"
);

#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread::{current, park, park_timeout, yield_now, Thread};
#[cfg(not(loom))]
pub(crate) use std::thread_local;
#[cfg(not(loom))]
pub(crate) use std::time::Instant;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::thread::{current, park, yield_now, Thread};

/// `std::thread_local!` with `const` initializers (the only kind the engine uses), turned into
/// loom's thread-locals, which take a plain initializer.
#[cfg(loom)]
macro_rules! loom_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }; $($rest:tt)*) => {
        ::loom::thread_local!($(#[$attr])* $vis static $name: $t = $init;);
        $crate::sync::thread_local!($($rest)*);
    };
}
#[cfg(loom)]
pub(crate) use loom_thread_local as thread_local;

/// One turn of a bounded spin loop.
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// One turn of a bounded spin loop: a yield, so the model runs the thread spun on.
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::hint::spin_loop();
}

/// The point between the `SeqCst` write and the `SeqCst` read of one side of a store-buffering
/// (Dekker) argument: nothing in normal builds, a `fence(SeqCst)` under loom.
///
/// Loom treats `SeqCst` loads, stores and read-modify-writes as `AcqRel` (its README,
/// "Unsupported features"), so it reports outcomes that the single total order of `SeqCst`
/// accesses rules out: both sides reading the other's location before the other's write. It does
/// model `SeqCst` fences, and a fence on each side rules those outcomes out again. A fence orders
/// every access around it, not only the `SeqCst` ones, so the model is slightly stronger than a
/// real build here; the arguments it stands in (retry registration against a committer, see
/// `parking.rs`) involve only `SeqCst` accesses.
/// Load a word that no thread writes any more and whose last write happened before us.
///
/// Under loom an unsynchronised load, which loom checks for exactly that (a racing or unordered
/// write fails the model) without making the load a point where threads may switch: the version
/// chain walks of the trimmer would otherwise multiply the interleavings a model explores.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn load_unraced(word: &AtomicU64) -> u64 {
    word.load(Ordering::Relaxed)
}

#[cfg(loom)]
pub(crate) fn load_unraced(word: &AtomicU64) -> u64 {
    // SAFETY: the caller's contract (see the non-loom twin); loom verifies it.
    unsafe { word.unsync_load() }
}

#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn seq_cst_point() {}

/// See the normal build's `seq_cst_point`.
#[cfg(loom)]
pub(crate) fn seq_cst_point() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Objects leaked for the rest of the process that a dropped owner hands to the next one
/// (commit records, snapshot slots: a reader may look at one whenever it likes, so none is ever
/// freed).
///
/// Under loom a pool would outlive the model's execution: `take` finds nothing (the caller leaks
/// a new object) and `give` forgets the object.
pub(crate) struct LeakPool<T: 'static> {
    #[cfg(not(loom))]
    free: Mutex<Vec<&'static T>>,
    #[cfg(loom)]
    free: std::marker::PhantomData<&'static T>,
}

impl<T: Sync + 'static> LeakPool<T> {
    pub(crate) const fn new() -> Self {
        LeakPool {
            #[cfg(not(loom))]
            free: Mutex::new(Vec::new()),
            #[cfg(loom)]
            free: std::marker::PhantomData,
        }
    }

    /// An object given back earlier, if any; the caller leaks a new one otherwise.
    pub(crate) fn take(&self) -> Option<&'static T> {
        #[cfg(not(loom))]
        return self.free.lock().pop();
        #[cfg(loom)]
        return None;
    }

    /// Give an object back for the next `take`.
    pub(crate) fn give(&self, object: &'static T) {
        #[cfg(not(loom))]
        self.free.lock().push(object);
        #[cfg(loom)]
        let _ = (&self.free, object);
    }
}

/// Declare a `static` with a constant initializer.
///
/// Normal builds get the plain `static`. Under loom, atomics are not `const`-constructible and
/// must not outlive one execution of a model, so the static is a `loom::lazy_static!` holding
/// the value behind an `Arc`, built again for every execution. Method calls,
/// indexing and `&NAME` work on both. A second initializer after `loom:` replaces the first
/// under loom, for initializers that need `const` there.
macro_rules! global {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        $crate::sync::global!($(#[$attr])* static $name: $t = $init; loom: $init;);
    };
    ($(#[$attr:meta])* pub(crate) static $name:ident: $t:ty = $init:expr;) => {
        $crate::sync::global!($(#[$attr])* pub(crate) static $name: $t = $init; loom: $init;);
    };
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr; loom: $loom:expr;) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        static $name: $t = $init;
        #[cfg(loom)]
        ::loom::lazy_static! {
            $(#[$attr])*
            static ref $name: ::std::sync::Arc<$t> = ::std::sync::Arc::new($loom);
        }
    };
    ($(#[$attr:meta])* pub(crate) static $name:ident: $t:ty = $init:expr; loom: $loom:expr;) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        pub(crate) static $name: $t = $init;
        #[cfg(loom)]
        ::loom::lazy_static! {
            $(#[$attr])*
            pub(crate) static ref $name: ::std::sync::Arc<$t> = ::std::sync::Arc::new($loom);
        }
    };
}
pub(crate) use global;

/// A number for each new TVar, in creation order: the lock-order key under loom (see
/// `Header::order_key`). Not part of the model (a std atomic, no step for loom to explore); it
/// only has to rank the variables of one execution in the same order every time, and creation
/// order is fixed by the schedule.
#[cfg(loom)]
pub(crate) fn creation_number() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `parking_lot::Mutex`'s interface over loom's mutex (no poisoning to unwrap).
#[cfg(loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // A panic while locked is a failed model anyway; loom's guard poisons like std's.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Loom has no time: a timed park is a park that may end at any moment, which is a yield (the
/// caller re-checks its condition and parks again).
#[cfg(loom)]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    loom::thread::yield_now();
}

/// Time does not pass under loom: `now()` is always the same instant, `elapsed()` is zero, and a
/// deadline `now() + d` with `d > 0` never passes. A model must not rely on a timeout firing.
#[cfg(loom)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct Instant(std::time::Duration);

#[cfg(loom)]
impl Instant {
    pub(crate) fn now() -> Instant {
        Instant(std::time::Duration::ZERO)
    }

    pub(crate) fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

#[cfg(loom)]
impl std::ops::Add<std::time::Duration> for Instant {
    type Output = Instant;
    fn add(self, d: std::time::Duration) -> Instant {
        Instant(self.0 + d)
    }
}

#[cfg(loom)]
impl std::ops::Sub for Instant {
    type Output = std::time::Duration;
    fn sub(self, earlier: Instant) -> std::time::Duration {
        self.0.saturating_sub(earlier.0)
    }
}
