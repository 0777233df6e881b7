//! The one module that imports atomics and thread primitives.
//!
//! Every other module of the engine takes its atomics, locks and thread primitives from here, so
//! the concurrency kernels can be swapped for model-checked ones in one place (the pattern of
//! tokio's `src/loom/`). Epoch pinning goes through crossbeam-epoch, which brings its own loom
//! support.

pub(crate) use parking_lot::Mutex;
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
pub(crate) use std::thread::{park, park_timeout, yield_now};

/// One turn of a bounded spin loop.
#[inline]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}
