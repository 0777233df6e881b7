//! The ring of slots behind [`TQueue`](crate::TQueue) and [`TBQueue`](crate::TBQueue).
//!
//! Each slot is its own TVar holding `Option<T>`; `head` (the next item to pop) belongs to the
//! consumer side, `tail` (the next free slot) to the producer side. A push reads `tail` and the
//! slot under it and fills that slot; a pop reads `head` and the slot under it and empties it. So
//! a producer and a consumer touch disjoint TVars unless the ring is empty or full (then they
//! meet on one slot, which is exactly when one must wait for the other). A slot still full under
//! `tail` means the ring is full, without reading `head`.
//!
//! The ring allocates nothing per item beyond the new version of a slot, and holds no TVar from
//! another TVar, so reclamation is as for any flat set of TVars (an earlier design linked a TVar
//! per item, and freeing such a chain takes one epoch round per link).
//!
//! A growable ring (the unbounded queue) doubles when a push finds it full: the pushing
//! transaction copies the items into a new ring of fresh slot TVars and installs it. Every
//! operation reads the ring pointer, so that transaction conflicts once with the others.

use mvstm_core::{StmResult, TVar, Txn};
use std::sync::Arc;

struct Slots<T: Clone + Send + Sync + 'static> {
    slots: Box<[TVar<Option<T>>]>,
}

impl<T: Clone + Send + Sync + 'static> Slots<T> {
    fn with_capacity(capacity: usize) -> Slots<T> {
        Slots {
            slots: (0..capacity).map(|_| TVar::new(None)).collect(),
        }
    }

    fn slot(&self, index: u64) -> &TVar<Option<T>> {
        &self.slots[(index % self.slots.len() as u64) as usize]
    }
}

pub(crate) struct Ring<T: Clone + Send + Sync + 'static> {
    slots: TVar<Arc<Slots<T>>>,
    /// Index (ever increasing) of the next item to pop. Consumer side.
    head: TVar<u64>,
    /// Index (ever increasing) of the next slot to fill. Producer side.
    tail: TVar<u64>,
    growable: bool,
}

impl<T: Clone + Send + Sync + 'static> Ring<T> {
    pub(crate) fn new(capacity: usize, growable: bool) -> Ring<T> {
        Ring {
            slots: TVar::new(Arc::new(Slots::with_capacity(capacity))),
            head: TVar::new(0),
            tail: TVar::new(0),
            growable,
        }
    }

    /// Fill the next slot, or give the value back if the (fixed) ring is full.
    pub(crate) fn try_push(&self, tx: &mut Txn, value: T) -> StmResult<Result<(), T>> {
        let mut slots = tx.read(&self.slots)?;
        let tail = tx.read(&self.tail)?;
        if tx.read(slots.slot(tail))?.is_some() {
            if !self.growable {
                return Ok(Err(value));
            }
            slots = self.grow(tx, &slots, tail)?;
        }
        tx.write(slots.slot(tail), Some(value))?;
        tx.write(&self.tail, tail + 1)?;
        Ok(Ok(()))
    }

    /// Double the ring: copy the items `head..tail` into fresh slots at their indices.
    fn grow(&self, tx: &mut Txn, old: &Slots<T>, tail: u64) -> StmResult<Arc<Slots<T>>> {
        let head = tx.read(&self.head)?;
        let capacity = old.slots.len() * 2;
        let mut values: Vec<Option<T>> = vec![None; capacity];
        for index in head..tail {
            values[(index % capacity as u64) as usize] = tx.read(old.slot(index))?;
        }
        // Fresh TVars holding their values: private until the ring pointer is published.
        let bigger = Arc::new(Slots {
            slots: values.into_iter().map(TVar::new).collect(),
        });
        tx.write(&self.slots, bigger.clone())?;
        Ok(bigger)
    }

    /// Take the item under `head`, if any.
    pub(crate) fn try_pop(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let slots = tx.read(&self.slots)?;
        let head = tx.read(&self.head)?;
        let slot = slots.slot(head);
        let value = tx.read(slot)?;
        if value.is_some() {
            tx.write(slot, None)?;
            tx.write(&self.head, head + 1)?;
        }
        Ok(value)
    }

    /// Take the item under `head`; retries (blocks) while the ring is empty.
    pub(crate) fn pop(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(self.try_pop(tx)?)
    }

    /// The item under `head` without taking it; retries (blocks) while the ring is empty.
    pub(crate) fn peek(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(self.try_peek(tx)?)
    }

    /// The item under `head`, if any, without taking it.
    pub(crate) fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let slots = tx.read(&self.slots)?;
        let head = tx.read(&self.head)?;
        tx.read(slots.slot(head))
    }

    /// Number of items (reads both ends).
    pub(crate) fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        let head = tx.read(&self.head)?;
        let tail = tx.read(&self.tail)?;
        Ok((tail - head) as usize)
    }

    /// Whether the slot under `head` is empty (consumer side only).
    pub(crate) fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        Ok(self.try_peek(tx)?.is_none())
    }

    /// Whether the slot under `tail` is full (producer side only).
    pub(crate) fn is_full(&self, tx: &mut Txn) -> StmResult<bool> {
        let slots = tx.read(&self.slots)?;
        let tail = tx.read(&self.tail)?;
        Ok(tx.read(slots.slot(tail))?.is_some())
    }

    /// Take every item, front first.
    pub(crate) fn drain(&self, tx: &mut Txn) -> StmResult<Vec<T>> {
        let slots = tx.read(&self.slots)?;
        let head = tx.read(&self.head)?;
        let tail = tx.read(&self.tail)?;
        let mut items = Vec::with_capacity((tail - head) as usize);
        for index in head..tail {
            let slot = slots.slot(index);
            items.extend(tx.read(slot)?);
            tx.write(slot, None)?;
        }
        if tail != head {
            tx.write(&self.head, tail)?;
        }
        Ok(items)
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            slots: self.slots.clone(),
            head: self.head.clone(),
            tail: self.tail.clone(),
            growable: self.growable,
        }
    }
}
