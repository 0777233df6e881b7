//! `TPriorityQueue`: a transactional priority queue whose `pop` gives the greatest element (ZIO's
//! `TPriorityQueue`; the order of `std::collections::BinaryHeap`).
//!
//! # Structure
//!
//! The elements are split by value into *chunks*, each its own TVar holding a small sorted
//! persistent vector (`Arc<Vec<T>>`, ascending). An *index* TVar lists the chunks from the
//! highest range down, each with its *floor*: chunk `i` holds the elements `x` with
//! `floor(i) <= x < floor(i - 1)`; the last chunk's floor is "below everything".
//!
//! ```text
//!  index ──► [ (floor 90, chunk 0: [90, 95, 99]) , (floor 40, chunk 1: [40, 51, 77]) , (−∞, chunk 2: [3, 8]) ]
//! ```
//!
//! - `pop` reads the index and chunk 0 and writes chunk 0 (it takes its last element).
//! - `push(x)` reads the index, finds by binary search the chunk whose range holds `x`, and
//!   writes that chunk.
//! - A chunk that grows past [`MAX_CHUNK`] is split in two (a new chunk TVar and a write of the
//!   index); a chunk 0 emptied by `pop` is unlinked from the index. Every chunk but a lone one is
//!   therefore non-empty, and the greatest element is the last of chunk 0.
//!
//! # Conflicts
//!
//! A `push` of an element below chunk 0's floor and a `pop` write different chunk TVars and only
//! read the index, so they commit side by side without conflict (tested). They do conflict when
//! the pushed element falls in the top chunk (it is among roughly the greatest `MAX_CHUNK / 2`
//! elements: the pop could have to return it) and when either changes the index: a split about
//! once every `MAX_CHUNK / 2` pushes into a chunk, an unlink once every `MAX_CHUNK / 2` pops or
//! so. Two pushes conflict when they land in the same chunk; two pops always conflict (both take
//! the greatest element). `len` reads every chunk, so it conflicts with every writer.
//!
//! ZIO keeps its whole queue in one `TRef`, where every push conflicts with every pop. A
//! transactional binary heap would also put every push and pop on one shared size counter and
//! on the root slot.

use mvstm_core::{StmResult, TVar, Txn};
use std::sync::Arc;

/// A chunk longer than this after a push is split in two.
const MAX_CHUNK: usize = 64;

/// One chunk of the index: its floor (`None`: below everything; the last chunk's) and elements.
struct Chunk<T: Clone + Send + Sync + 'static> {
    floor: Option<T>,
    elements: TVar<Arc<Vec<T>>>,
}

impl<T: Clone + Send + Sync + 'static> Clone for Chunk<T> {
    fn clone(&self) -> Self {
        Chunk {
            floor: self.floor.clone(),
            elements: self.elements.clone(),
        }
    }
}

type Index<T> = Arc<Vec<Chunk<T>>>;

/// A transactional priority queue: `pop` gives the greatest element, like `BinaryHeap`.
///
/// The elements are split by value into chunks, each its own TVar (a sorted vector of at most 64
/// before it splits), under an index TVar of the chunks' floors. A `pop` writes the top chunk; a
/// `push` writes the chunk whose range holds the element. So a `push` of an element below the
/// top chunk (roughly the greatest 32 to 64 elements) and a `pop` do not conflict; they do when
/// the element falls in the top chunk, or when a split or an emptied top chunk rewrites the
/// index. `len` reads every chunk. Details: `docs/collections.md`.
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::TPriorityQueue;
/// let pq: TPriorityQueue<u32> = TPriorityQueue::new();
/// atomically(|tx| { pq.push(tx, 2)?; pq.push(tx, 9) });
/// assert_eq!(atomically(|tx| pq.pop(tx)), 9); // retries while empty
/// assert_eq!(atomically(|tx| pq.try_pop(tx)), Some(2));
/// assert_eq!(atomically(|tx| pq.try_pop(tx)), None);
/// ```
pub struct TPriorityQueue<T: Ord + Clone + Send + Sync + 'static> {
    index: TVar<Index<T>>,
}

impl<T: Ord + Clone + Send + Sync + 'static> TPriorityQueue<T> {
    /// An empty queue.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq: TPriorityQueue<String> = TPriorityQueue::new();
    /// assert!(atomically(|tx| pq.is_empty(tx)));
    /// ```
    pub fn new() -> TPriorityQueue<T> {
        TPriorityQueue {
            index: TVar::new(Self::single_empty_chunk()),
        }
    }

    fn single_empty_chunk() -> Index<T> {
        Arc::new(vec![Chunk {
            floor: None,
            elements: TVar::new(Arc::new(Vec::new())),
        }])
    }

    /// Add `value`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// atomically(|tx| (0..100).try_for_each(|i| pq.push(tx, (i * 37) % 100)));
    /// assert_eq!(atomically(|tx| pq.len(tx)), 100);
    /// assert_eq!(atomically(|tx| pq.peek(tx)), 99);
    /// ```
    pub fn push(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        let index = tx.read(&self.index)?;
        // The first chunk whose floor is at or below `value` (the last one's always is).
        let at = index.partition_point(|c| matches!(&c.floor, Some(floor) if *floor > value));
        let chunk = &index[at];
        let old = tx.read(&chunk.elements)?;
        let mut elements = Vec::with_capacity(old.len() + 1);
        let pos = old.partition_point(|x| *x <= value);
        elements.extend_from_slice(&old[..pos]);
        elements.push(value);
        elements.extend_from_slice(&old[pos..]);
        if elements.len() <= MAX_CHUNK {
            return tx.write(&chunk.elements, Arc::new(elements));
        }
        let Some(cut) = split_point(&elements) else {
            // Every element is equal: no floor can separate them, so the chunk stays long.
            return tx.write(&chunk.elements, Arc::new(elements));
        };
        let upper = elements.split_off(cut);
        let floor = upper[0].clone();
        tx.write(&chunk.elements, Arc::new(elements))?;
        // The new chunk TVar holds its elements already: it is private until the index is
        // published, so it needs no transactional write.
        let mut chunks: Vec<Chunk<T>> = Vec::with_capacity(index.len() + 1);
        chunks.extend_from_slice(&index[..at]);
        chunks.push(Chunk {
            floor: Some(floor),
            elements: TVar::new(Arc::new(upper)),
        });
        chunks.extend_from_slice(&index[at..]);
        tx.write(&self.index, Arc::new(chunks))
    }

    /// Remove and return the greatest element; retries (blocks) while the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// let producer = pq.clone();
    /// std::thread::spawn(move || atomically(|tx| producer.push(tx, 7)));
    /// assert_eq!(atomically(|tx| pq.pop(tx)), 7); // waits for the producer
    /// ```
    pub fn pop(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(self.try_pop(tx)?)
    }

    /// Remove and return the greatest element, or `None` if the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// assert_eq!(atomically(|tx| pq.try_pop(tx)), None);
    /// atomically(|tx| { pq.push(tx, 'a')?; pq.push(tx, 'z') });
    /// assert_eq!(atomically(|tx| pq.try_pop(tx)), Some('z'));
    /// ```
    pub fn try_pop(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let index = tx.read(&self.index)?;
        let top = &index[0];
        let old = tx.read(&top.elements)?;
        let Some((greatest, rest)) = old.split_last() else {
            return Ok(None); // only a lone chunk is ever empty
        };
        let greatest = greatest.clone();
        if rest.is_empty() && index.len() > 1 {
            // Unlink the emptied top chunk; the next one's range now reaches up to everything.
            tx.write(&self.index, Arc::new(index[1..].to_vec()))?;
        } else {
            tx.write(&top.elements, Arc::new(rest.to_vec()))?;
        }
        Ok(Some(greatest))
    }

    /// The greatest element without removing it; retries (blocks) while the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// atomically(|tx| { pq.push(tx, 1)?; pq.push(tx, 3) });
    /// assert_eq!(atomically(|tx| pq.peek(tx)), 3);
    /// assert_eq!(atomically(|tx| pq.len(tx)), 2);
    /// ```
    pub fn peek(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(self.try_peek(tx)?)
    }

    /// The greatest element without removing it, or `None` if the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// assert_eq!(atomically(|tx| pq.try_peek(tx)), None);
    /// atomically(|tx| pq.push(tx, 4));
    /// assert_eq!(atomically(|tx| pq.try_peek(tx)), Some(4));
    /// ```
    pub fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let index = tx.read(&self.index)?;
        tx.read_with(&index[0].elements, |e| e.last().cloned())
    }

    /// Number of elements. Reads every chunk, so it conflicts with every writer.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// atomically(|tx| (0..500u32).try_for_each(|i| pq.push(tx, i)));
    /// assert_eq!(atomically(|tx| pq.len(tx)), 500);
    /// ```
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        let index = tx.read(&self.index)?;
        let mut n = 0;
        for chunk in index.iter() {
            n += tx.read_with(&chunk.elements, |e| e.len())?;
        }
        Ok(n)
    }

    /// Whether the queue is empty (reads the index and the top chunk only).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// assert!(atomically(|tx| pq.is_empty(tx)));
    /// atomically(|tx| pq.push(tx, 1));
    /// assert!(!atomically(|tx| pq.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        let index = tx.read(&self.index)?;
        tx.read_with(&index[0].elements, |e| e.is_empty())
    }

    /// Remove and return every element, greatest first (empty if the queue is empty; never
    /// retries).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TPriorityQueue};
    /// let pq = TPriorityQueue::new();
    /// atomically(|tx| [5, 1, 4].into_iter().try_for_each(|i| pq.push(tx, i)));
    /// assert_eq!(atomically(|tx| pq.drain(tx)), vec![5, 4, 1]);
    /// assert!(atomically(|tx| pq.is_empty(tx)));
    /// ```
    pub fn drain(&self, tx: &mut Txn) -> StmResult<Vec<T>> {
        let index = tx.read(&self.index)?;
        let mut all = Vec::new();
        for chunk in index.iter() {
            tx.read_with(&chunk.elements, |e| all.extend(e.iter().rev().cloned()))?;
        }
        if !all.is_empty() {
            tx.write(&self.index, Self::single_empty_chunk())?;
        }
        Ok(all)
    }
}

/// Where to cut a sorted, over-long chunk so that the two halves have different values on each
/// side of the cut (the upper half's first element becomes its floor): the cut nearest to the
/// middle, or `None` if every element is equal.
fn split_point<T: Ord>(sorted: &[T]) -> Option<usize> {
    let mid = sorted.len() / 2;
    (0..sorted.len()).find_map(|d| {
        [mid + d, mid.wrapping_sub(d)]
            .into_iter()
            .find(|&cut| cut > 0 && cut < sorted.len() && sorted[cut - 1] < sorted[cut])
    })
}

impl<T: Ord + Clone + Send + Sync + 'static> Default for TPriorityQueue<T> {
    fn default() -> Self {
        TPriorityQueue::new()
    }
}

impl<T: Ord + Clone + Send + Sync + 'static> Clone for TPriorityQueue<T> {
    /// Another handle to the same queue.
    fn clone(&self) -> Self {
        TPriorityQueue {
            index: self.index.clone(),
        }
    }
}

impl<T: Ord + Clone + Send + Sync + 'static> std::fmt::Debug for TPriorityQueue<T> {
    /// Shows no elements: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TPriorityQueue").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::split_point;

    #[test]
    fn split_point_separates_different_values_nearest_the_middle() {
        assert_eq!(split_point(&[1, 2, 3, 4]), Some(2));
        assert_eq!(split_point(&[1, 2, 2, 2, 2, 2]), Some(1));
        assert_eq!(split_point(&[1, 1, 1, 1, 1, 2]), Some(5));
        assert_eq!(split_point(&[3, 3, 3]), None);
    }
}
