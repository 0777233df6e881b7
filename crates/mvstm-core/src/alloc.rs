//! Per-thread caches of version-node memory.
//!
//! Every committed write allocates one version and, once the horizon passes it, frees an old one.
//! The frees arrive in batches (a trim cuts a whole tail, run later by the epoch collector),
//! which overflow the global allocator's small per-thread caches and send both frees and the
//! next allocations down its slow paths. A short stack of free blocks per layout, per thread,
//! turns both into a few instructions.
//!
//! Blocks are ordinary global-allocator blocks of the exact layout of the value they hold, so a
//! block can come from `Box` and go back through [`dealloc`], or the reverse. A stack holds
//! blocks of one `(size, align)` only, and is bounded. At thread exit the cached blocks are freed.
//!
//! Threads do not free what they allocate: the epoch collector frees old versions on whichever
//! thread collects, in bursts, so one thread's stack overflows while another's runs dry, and
//! both would fall through to the global allocator (with two committing threads, glibc's
//! cross-thread frees and the consolidations they cause were the largest cost of a transfer).
//! So a full stack is handed whole to a per-class *depot* and the thread goes on with an empty
//! one, and an empty stack takes a full one from the depot before it asks the global allocator
//! (Bonwick's magazines): one lock per [`CAP`] blocks moves memory from the threads that free to
//! the threads that allocate. The depot keeps at most [`DEPOT_BYTES`] of full stacks per class;
//! beyond that their blocks go back to the global allocator. The bound is in bytes because the
//! bursts scale with the reclamation lag, not with the block size: with more threads than cores,
//! a descheduled pinned thread holds the epoch back for a whole round of the scheduler, and the
//! tens of thousands of versions retired meanwhile are freed at once (a count of 64 magazines
//! sent most of such a burst back to glibc, and the next allocations into its slow paths).
//!
//! Under loom the cache is off and every block goes to the global allocator: it is memory
//! private to one thread, with nothing to model, and the version frees that crossbeam-epoch runs
//! while a modelled thread tears down would find its thread-locals already gone.

use std::alloc::Layout;
#[cfg(not(loom))]
use std::cell::Cell;
#[cfg(not(loom))]
use std::ptr;
use std::ptr::NonNull;

/// Layouts with `align == 8` and `size <= MAX_SIZE` (multiples of 8) are cached.
const MAX_SIZE: usize = 256;
const CLASSES: usize = MAX_SIZE / 8;

/// Free blocks kept per class and thread: the size of one magazine.
const CAP: usize = 512;

/// Bytes of blocks the depot keeps in full magazines, per class: 8 MiB, 682 magazines of
/// 24-byte blocks (a `Version<i64>`), 64 of 256-byte ones. A process whose versions use every
/// one of the 32 classes could keep 256 MiB here after a burst (the old bound of 64 magazines
/// allowed about 138 MiB); one value type keeps at most 8 MiB.
#[cfg(not(loom))]
const DEPOT_BYTES: usize = 8 << 20;

/// How many full magazines the depot keeps for `class`.
#[cfg(not(loom))]
fn depot_full(class: usize) -> usize {
    DEPOT_BYTES / (CAP * layout_of(class).size())
}

/// A stack of free blocks of one class, moved between threads whole.
#[cfg(not(loom))]
struct Magazine(Vec<NonNull<u8>>);

// SAFETY: the blocks are free global-allocator memory owned by the magazine alone; any thread
// may hand them out or free them.
#[cfg(not(loom))]
unsafe impl Send for Magazine {}

/// Full magazines for the threads whose stacks ran dry, and empty ones (their buffers) for the
/// threads whose stacks filled up.
#[cfg(not(loom))]
struct Depot {
    full: Vec<Magazine>,
    empty: Vec<Magazine>,
}

#[cfg(not(loom))]
static DEPOT: [crate::sync::Mutex<Depot>; CLASSES] = [const {
    crate::sync::Mutex::new(Depot {
        full: Vec::new(),
        empty: Vec::new(),
    })
}; CLASSES];

/// Swap this thread's empty stack of `class` for a full magazine from the depot; false if the
/// depot has none.
#[cfg(not(loom))]
#[cold]
fn refill(stack: &mut Vec<NonNull<u8>>, class: usize) -> bool {
    let mut depot = DEPOT[class].lock();
    let Some(Magazine(full)) = depot.full.pop() else {
        return false;
    };
    let empty = std::mem::replace(stack, full);
    depot.empty.push(Magazine(empty));
    true
}

/// Hand this thread's full stack of `class` to the depot and go on with an empty one.
#[cfg(not(loom))]
#[cold]
fn spill(stack: &mut Vec<NonNull<u8>>, class: usize) {
    let mut depot = DEPOT[class].lock();
    let empty = depot
        .empty
        .pop()
        .map_or_else(|| Vec::with_capacity(CAP), |Magazine(v)| v);
    let mut full = std::mem::replace(stack, empty);
    if depot.full.len() < depot_full(class) {
        depot.full.push(Magazine(full));
        return;
    }
    drop(depot);
    let layout = layout_of(class);
    for block in full.drain(..) {
        // SAFETY: cached blocks are global-allocator blocks of their class's layout, owned by
        // the cache alone.
        unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
    }
    DEPOT[class].lock().empty.push(Magazine(full));
}

// Under loom no `Stacks` is ever built (module docs).
#[cfg_attr(loom, allow(dead_code))]
struct Stacks([Vec<NonNull<u8>>; CLASSES]);

impl Drop for Stacks {
    fn drop(&mut self) {
        for (class, stack) in self.0.iter_mut().enumerate() {
            let layout = layout_of(class);
            for block in stack.drain(..) {
                // SAFETY: every cached block was allocated by the global allocator with the
                // layout of its class, and is owned by the cache alone.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

#[cfg(not(loom))]
crate::sync::thread_local! {
    /// This thread's stacks, or null before first use and after thread-local teardown began.
    /// A plain pointer keeps the fast path a single thread-local load (no lazy-destructor
    /// check, no `RefCell` flag); `OWNER` owns the box and frees it at thread exit.
    static STACKS: Cell<*mut Stacks> = const { Cell::new(ptr::null_mut()) };
    static OWNER: StacksOwner = const { StacksOwner };
}

#[cfg(not(loom))]
struct StacksOwner;

#[cfg(not(loom))]
impl Drop for StacksOwner {
    fn drop(&mut self) {
        let stacks = STACKS.with(|s| s.replace(ptr::null_mut()));
        if !stacks.is_null() {
            // SAFETY: a non-null `STACKS` is the box leaked by `stacks`, owned by `OWNER`.
            drop(unsafe { Box::from_raw(stacks) });
        }
    }
}

/// Run `f` on this thread's stacks, creating them on first use; `None` once the thread's
/// thread-locals are being torn down.
#[cfg(not(loom))]
#[inline]
fn with_stacks<R>(f: impl FnOnce(&mut Stacks) -> R) -> Option<R> {
    let mut stacks = STACKS.with(Cell::get);
    if stacks.is_null() {
        stacks = create_stacks_slow()?;
    }
    // SAFETY: the pointer is this thread's own box, alive until `OWNER` drops it (which nulls
    // the pointer first), and `f` never re-enters this module: no other reference exists.
    Some(f(unsafe { &mut *stacks }))
}

/// Under loom there is no cache (module docs).
#[cfg(loom)]
#[inline]
fn with_stacks<R>(_f: impl FnOnce(&mut Stacks) -> R) -> Option<R> {
    None
}

#[cfg(not(loom))]
#[cold]
fn create_stacks_slow() -> Option<*mut Stacks> {
    // Register the owner first: if the thread is already tearing down, use no cache at all.
    OWNER.try_with(|_| ()).ok()?;
    let stacks = Box::into_raw(Box::new(Stacks([const { Vec::new() }; CLASSES])));
    STACKS.with(|s| s.set(stacks));
    Some(stacks)
}

#[inline]
const fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() == 8 && size % 8 == 0 && size > 0 && size <= MAX_SIZE {
        Some(size / 8 - 1)
    } else {
        None
    }
}

fn layout_of(class: usize) -> Layout {
    // The inverse of `class_of`; valid for every class index.
    Layout::from_size_align((class + 1) * 8, 8).expect("class layouts are valid")
}

/// Uninitialized memory for a `T` (of non-zero size).
#[inline]
pub(crate) fn alloc<T>() -> NonNull<T> {
    let layout = Layout::new::<T>();
    if let Some(class) = class_of(layout) {
        let cached = with_stacks(|s| {
            let stack = &mut s.0[class];
            if stack.is_empty() {
                #[cfg(not(loom))]
                refill(stack, class);
            }
            stack.pop()
        });
        if let Some(Some(block)) = cached {
            return block.cast();
        }
    }
    assert!(layout.size() > 0, "version nodes are never zero-sized");
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { std::alloc::alloc(layout) };
    match NonNull::new(block) {
        Some(block) => block.cast(),
        None => std::alloc::handle_alloc_error(layout),
    }
}

/// Give back the memory of a `T` whose value was already dropped or moved out.
///
/// # Safety
///
/// `block` was allocated by the global allocator with `Layout::new::<T>()` (by [`alloc`], or
/// by `Box<T>`), holds no live value, and is not used afterwards.
#[inline]
pub(crate) unsafe fn dealloc<T>(block: NonNull<T>) {
    let layout = Layout::new::<T>();
    if let Some(class) = class_of(layout) {
        let kept = with_stacks(|s| {
            let stack = &mut s.0[class];
            if stack.len() >= CAP {
                #[cfg(not(loom))]
                spill(stack, class);
            }
            stack.push(block.cast());
        });
        if kept.is_some() {
            return;
        }
    }
    // SAFETY: per the contract, allocated by the global allocator with this layout.
    unsafe { std::alloc::dealloc(block.as_ptr().cast(), layout) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_layouts_round_trip() {
        for class in 0..CLASSES {
            assert_eq!(class_of(layout_of(class)), Some(class));
        }
        assert_eq!(class_of(Layout::new::<[u64; 3]>()), Some(2));
        assert_eq!(
            class_of(Layout::new::<u32>()),
            None,
            "align 4 is not cached"
        );
        assert_eq!(
            class_of(Layout::new::<[u64; 40]>()),
            None,
            "larger than MAX_SIZE"
        );
        assert_eq!(
            class_of(Layout::new::<u128>()),
            None,
            "align 16 is not cached"
        );
    }

    #[test]
    #[cfg(not(loom))] // no cache under loom
    fn a_freed_block_is_reused_by_the_next_allocation_of_its_layout() {
        let first = alloc::<[u64; 3]>();
        // SAFETY: `first` came from `alloc` with this layout and holds no value.
        unsafe { dealloc(first) };
        let second = alloc::<[u64; 3]>();
        assert_eq!(first, second);
        // SAFETY: as above.
        unsafe { dealloc(second) };
    }

    #[test]
    fn uncached_layouts_go_to_the_global_allocator() {
        let block = alloc::<u128>();
        // SAFETY: fresh memory for a `u128`.
        unsafe {
            block.write(7);
            assert_eq!(block.read(), 7);
            dealloc(block);
        }
    }
}
