//! The one module that imports atomics and thread primitives.
//!
//! Every other module of the engine takes its atomics from here, so the concurrency kernels can
//! be swapped for model-checked ones in one place (the pattern of tokio's `src/loom/`).

pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One turn of a bounded spin loop.
#[inline]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}
