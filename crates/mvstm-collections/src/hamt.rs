//! A persistent hash array mapped trie (Bagwell's HAMT, as in Clojure, `im` and stm-containers):
//! the structure under each bucket of a [`TMap`](crate::TMap).
//!
//! Nodes are immutable and shared through `Arc`. An insert or a remove copies only the nodes on
//! the path from the root to the key (at most one per 5 bits of hash) and shares every other
//! subtree with the version it came from, so an old root stays a complete, unchanged map for as
//! long as someone holds it: a snapshot is one `Arc` clone. The trie grows one node at a time,
//! where keys meet; nothing is ever rehashed.
//!
//! The caller hashes the key and passes the 64-bit hash with the bit offset (`shift`) at which
//! the root starts (a [`TMap`](crate::TMap) spends the low bits on choosing the bucket). Each
//! level takes the next [`BITS`] bits of the hash as an index into a 32-bit bitmap; a branch
//! stores only the children that exist, in index order (the bit's rank is the position).
//!
//! Invariants (checked by `check` in the tests below):
//! - a branch's bitmap has one bit per child; `len` is the number of entries below it;
//! - every key below a branch agrees with the path on the hash bits the path consumed;
//! - a branch other than the root holds at least two entries: a removal that leaves a single
//!   leaf (or collision) below a branch pulls it up, so the trie stays as shallow as the hashes
//!   allow;
//! - keys of one full hash share a collision node, which holds at least two distinct keys
//!   (a branch cannot split them: it would run out of hash bits).

use std::borrow::Borrow;
use std::sync::Arc;

/// Hash bits consumed per level.
pub(crate) const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;

/// An entry with its full hash, kept so that splitting a slot needs no re-hashing.
#[derive(Clone)]
pub(crate) struct Leaf<K, V> {
    hash: u64,
    key: K,
    value: V,
}

/// Keys whose full hashes are equal (a degenerate `Hash`): a short list searched by equality.
pub(crate) struct Collision<K, V> {
    hash: u64,
    entries: Box<[(K, V)]>,
}

/// A slot of a branch. Entries are stored inline, as in `im`'s HAMT: copying a path clones the
/// keys and values of the copied nodes, which is a plain copy for small types (wrap big ones in
/// `Arc`), and spares a reference count per entry.
pub(crate) enum Child<K, V> {
    Leaf(Leaf<K, V>),
    Branch(Arc<Node<K, V>>),
    Collision(Arc<Collision<K, V>>),
}

/// A branch of the trie.
pub(crate) struct Node<K, V> {
    bitmap: u32,
    len: usize,
    children: Box<[Child<K, V>]>,
}

fn index(hash: u64, shift: u32) -> u32 {
    debug_assert!(shift < 64, "a branch below the last hash bit");
    ((hash >> shift) & MASK) as u32
}

impl<K: Clone, V: Clone> Clone for Child<K, V> {
    fn clone(&self) -> Self {
        match self {
            Child::Leaf(leaf) => Child::Leaf(leaf.clone()),
            Child::Branch(node) => Child::Branch(node.clone()),
            Child::Collision(c) => Child::Collision(c.clone()),
        }
    }
}

impl<K, V> Child<K, V> {
    fn len(&self) -> usize {
        match self {
            Child::Leaf(_) => 1,
            Child::Branch(node) => node.len,
            Child::Collision(c) => c.entries.len(),
        }
    }

    /// The full hash of a leaf or a collision (both keep it; a branch has none).
    fn hash(&self) -> Option<u64> {
        match self {
            Child::Leaf(leaf) => Some(leaf.hash),
            Child::Branch(_) => None,
            Child::Collision(c) => Some(c.hash),
        }
    }
}

/// What [`Node::remove`] did.
pub(crate) struct Removed<K, V> {
    /// The branch without the key (at the root: the new root).
    pub(crate) node: Node<K, V>,
    /// The removed value.
    pub(crate) value: V,
}

impl<K, V> Node<K, V> {
    /// An empty branch (the root of an empty map).
    pub(crate) fn empty() -> Node<K, V> {
        Node {
            bitmap: 0,
            len: 0,
            children: Box::new([]),
        }
    }

    /// Number of entries in this trie.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot of `hash` at this level: its bit, and its position if present.
    fn slot(&self, hash: u64, shift: u32) -> (u32, Option<usize>) {
        let bit = 1u32 << index(hash, shift);
        let pos = (self.bitmap & (bit - 1)).count_ones() as usize;
        (bit, (self.bitmap & bit != 0).then_some(pos))
    }

    /// The value of `key`, whose hash is `hash`, in the trie rooted here at `shift`.
    pub(crate) fn get<Q>(&self, hash: u64, shift: u32, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut node = self;
        let mut shift = shift;
        loop {
            let (_, pos) = node.slot(hash, shift);
            match &node.children[pos?] {
                Child::Leaf(leaf) => {
                    return (leaf.hash == hash && leaf.key.borrow() == key).then_some(&leaf.value)
                }
                Child::Branch(next) => {
                    node = next;
                    shift += BITS;
                }
                Child::Collision(c) => {
                    if c.hash != hash {
                        return None;
                    }
                    return c
                        .entries
                        .iter()
                        .find(|(k, _)| k.borrow() == key)
                        .map(|(_, v)| v);
                }
            }
        }
    }
}

impl<K: Eq + Clone, V: Clone> Node<K, V> {
    /// A copy of this branch with the child at `pos` replaced.
    fn with_replaced(&self, pos: usize, child: Child<K, V>, len: usize) -> Node<K, V> {
        // Not `to_vec` then assign: that would count the replaced child up and down again.
        let mut child = Some(child);
        let children = self
            .children
            .iter()
            .enumerate()
            .map(|(i, c)| match i == pos {
                true => child.take().expect("one position is replaced"),
                false => c.clone(),
            })
            .collect();
        Node {
            bitmap: self.bitmap,
            len,
            children,
        }
    }

    /// A branch at `shift` holding two children whose (different) full hashes are given:
    /// a chain of one-child branches down to the level where their hashes part.
    fn pair(a: Child<K, V>, ha: u64, b: Child<K, V>, hb: u64, shift: u32) -> Node<K, V> {
        debug_assert_ne!(ha, hb, "keys of one hash belong in a collision node");
        let len = a.len() + b.len();
        let (ia, ib) = (index(ha, shift), index(hb, shift));
        if ia == ib {
            let below = Node::pair(a, ha, b, hb, shift + BITS);
            return Node {
                bitmap: 1 << ia,
                len,
                children: Box::new([Child::Branch(Arc::new(below))]),
            };
        }
        let children: Box<[Child<K, V>]> = if ia < ib {
            Box::new([a, b])
        } else {
            Box::new([b, a])
        };
        Node {
            bitmap: (1 << ia) | (1 << ib),
            len,
            children,
        }
    }

    /// This trie (rooted at `shift`) with `key` mapped to `value`; and the value it replaced.
    pub(crate) fn insert(
        &self,
        hash: u64,
        shift: u32,
        key: K,
        value: V,
    ) -> (Node<K, V>, Option<V>) {
        let (bit, pos) = self.slot(hash, shift);
        let Some(pos) = pos else {
            let at = (self.bitmap & (bit - 1)).count_ones() as usize;
            let mut children = Vec::with_capacity(self.children.len() + 1);
            children.extend_from_slice(&self.children[..at]);
            children.push(Child::Leaf(Leaf { hash, key, value }));
            children.extend_from_slice(&self.children[at..]);
            let node = Node {
                bitmap: self.bitmap | bit,
                len: self.len + 1,
                children: children.into_boxed_slice(),
            };
            return (node, None);
        };
        let (child, old) = match &self.children[pos] {
            Child::Leaf(leaf) if leaf.hash == hash && leaf.key == key => {
                let old = leaf.value.clone();
                (Child::Leaf(Leaf { hash, key, value }), Some(old))
            }
            Child::Leaf(leaf) if leaf.hash == hash => {
                let entries = Box::new([(leaf.key.clone(), leaf.value.clone()), (key, value)]);
                (
                    Child::Collision(Arc::new(Collision { hash, entries })),
                    None,
                )
            }
            Child::Leaf(leaf) => {
                let new = Child::Leaf(Leaf { hash, key, value });
                let below = Node::pair(
                    Child::Leaf(leaf.clone()),
                    leaf.hash,
                    new,
                    hash,
                    shift + BITS,
                );
                (Child::Branch(Arc::new(below)), None)
            }
            Child::Branch(next) => {
                let (below, old) = next.insert(hash, shift + BITS, key, value);
                (Child::Branch(Arc::new(below)), old)
            }
            Child::Collision(c) if c.hash == hash => {
                let mut entries = c.entries.to_vec();
                let old = match entries.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => Some(std::mem::replace(&mut entry.1, value)),
                    None => {
                        entries.push((key, value));
                        None
                    }
                };
                let entries = entries.into_boxed_slice();
                (Child::Collision(Arc::new(Collision { hash, entries })), old)
            }
            Child::Collision(c) => {
                let new = Child::Leaf(Leaf { hash, key, value });
                let below =
                    Node::pair(Child::Collision(c.clone()), c.hash, new, hash, shift + BITS);
                (Child::Branch(Arc::new(below)), None)
            }
        };
        let len = self.len + usize::from(old.is_none());
        (self.with_replaced(pos, child, len), old)
    }

    /// This trie (rooted at `shift`) without `key`, or `None` if `key` is absent. The branch
    /// returned is not collapsed: the caller ([`Node::into_child`] below a branch) does that.
    pub(crate) fn remove<Q>(&self, hash: u64, shift: u32, key: &Q) -> Option<Removed<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let (bit, pos) = self.slot(hash, shift);
        let pos = pos?;
        let (child, value) = match &self.children[pos] {
            Child::Leaf(leaf) => {
                if leaf.hash != hash || leaf.key.borrow() != key {
                    return None;
                }
                (None, leaf.value.clone())
            }
            Child::Branch(next) => {
                let removed = next.remove(hash, shift + BITS, key)?;
                (removed.node.into_child(), removed.value)
            }
            Child::Collision(c) => {
                if c.hash != hash {
                    return None;
                }
                let at = c.entries.iter().position(|(k, _)| k.borrow() == key)?;
                let value = c.entries[at].1.clone();
                let mut rest = c.entries.iter().enumerate().filter(|(i, _)| *i != at);
                let child = if c.entries.len() == 2 {
                    let (_, (key, value)) = rest.next().expect("a collision holds two keys");
                    Child::Leaf(Leaf {
                        hash,
                        key: key.clone(),
                        value: value.clone(),
                    })
                } else {
                    let entries = rest.map(|(_, e)| e.clone()).collect();
                    Child::Collision(Arc::new(Collision { hash, entries }))
                };
                (Some(child), value)
            }
        };
        let node = match child {
            Some(child) => self.with_replaced(pos, child, self.len - 1),
            None => {
                let mut children = self.children.to_vec();
                children.remove(pos);
                Node {
                    bitmap: self.bitmap & !bit,
                    len: self.len - 1,
                    children: children.into_boxed_slice(),
                }
            }
        };
        Some(Removed { node, value })
    }

    /// This branch as the child of another: nothing if empty, its only entry (or collision) if
    /// it holds one, which the parent then keeps in its own slot (leaves and collisions carry
    /// their full hash, so they sit at any level), else itself.
    fn into_child(self) -> Option<Child<K, V>> {
        match &*self.children {
            [] => None,
            [only] if only.hash().is_some() => Some(only.clone()),
            _ => Some(Child::Branch(Arc::new(self))),
        }
    }
}

/// An owning iterator over the entries of a list of tries (the roots of a map's buckets): holds
/// the roots and the path it is on, clones each entry as it yields it.
pub(crate) struct Iter<K, V> {
    roots: std::vec::IntoIter<Arc<Node<K, V>>>,
    /// Branches being walked, each with the position of its next child.
    path: Vec<(Arc<Node<K, V>>, usize)>,
    /// A collision node being walked, with the position of its next entry.
    collision: Option<(Arc<Collision<K, V>>, usize)>,
    remaining: usize,
}

impl<K, V> Iter<K, V> {
    pub(crate) fn new(roots: Vec<Arc<Node<K, V>>>) -> Iter<K, V> {
        let remaining = roots.iter().map(|root| root.len).sum();
        Iter {
            roots: roots.into_iter(),
            path: Vec::new(),
            collision: None,
            remaining,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.remaining
    }
}

impl<K, V> Clone for Iter<K, V> {
    fn clone(&self) -> Self {
        Iter {
            roots: self.roots.clone(),
            path: self.path.clone(),
            collision: self.collision.clone(),
            remaining: self.remaining,
        }
    }
}

impl<K: Clone, V: Clone> Iterator for Iter<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some((c, at)) = &mut self.collision {
                if let Some((k, v)) = c.entries.get(*at) {
                    *at += 1;
                    self.remaining -= 1;
                    return Some((k.clone(), v.clone()));
                }
                self.collision = None;
            }
            let Some((node, at)) = self.path.last_mut() else {
                let root = self.roots.next()?;
                if root.len > 0 {
                    self.path.push((root, 0));
                }
                continue;
            };
            let Some(child) = node.children.get(*at) else {
                self.path.pop();
                continue;
            };
            *at += 1;
            match child {
                Child::Leaf(leaf) => {
                    self.remaining -= 1;
                    return Some((leaf.key.clone(), leaf.value.clone()));
                }
                Child::Branch(below) => {
                    let below = below.clone();
                    self.path.push((below, 0));
                }
                Child::Collision(c) => self.collision = Some((c.clone(), 0)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K: Clone, V: Clone> ExactSizeIterator for Iter<K, V> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Check every invariant of the module docs for the trie rooted at `node`; its entries.
    fn check(node: &Node<u32, u32>, shift: u32, prefix: u64, root: bool) -> usize {
        assert_eq!(node.bitmap.count_ones() as usize, node.children.len());
        assert!(
            root || node.len >= 2,
            "a non-root branch with {} entries",
            node.len
        );
        let low = |h: u64| {
            if shift == 0 {
                0
            } else {
                h & ((1u64 << shift) - 1)
            }
        };
        let mut total = 0;
        let mut bits = node.bitmap;
        for child in node.children.iter() {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            let on_path = |h: u64| low(h) == prefix && index(h, shift) == i;
            total += match child {
                Child::Leaf(leaf) => {
                    assert!(on_path(leaf.hash), "a leaf off its path");
                    1
                }
                Child::Collision(c) => {
                    assert!(on_path(c.hash), "a collision off its path");
                    assert!(c.entries.len() >= 2);
                    for (a, (k, _)) in c.entries.iter().enumerate() {
                        assert!(c.entries[a + 1..].iter().all(|(j, _)| j != k));
                    }
                    c.entries.len()
                }
                Child::Branch(below) => {
                    check(below, shift + BITS, prefix | (u64::from(i) << shift), false)
                }
            };
        }
        assert_eq!(total, node.len);
        total
    }

    type Root = Arc<Node<u32, u32>>;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
        Get(u32),
        Snapshot,
    }

    /// Hash functions that make keys meet: few values (collision nodes), values that agree on
    /// all but the top bits (the deepest paths), and a spread one.
    fn hash_of(kind: u8, key: u32) -> u64 {
        let k = u64::from(key);
        match kind {
            0 => k % 5,
            1 => (k % 6) << 61 | 7,
            2 => (k % 40).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20,
            _ => k.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn op(keys: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..keys, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0..keys).prop_map(Op::Remove),
            2 => (0..keys).prop_map(Op::Get),
            1 => Just(Op::Snapshot),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn trie_matches_a_hashmap(
            kind in 0u8..4,
            shift in prop_oneof![Just(0u32), Just(6u32), Just(63u32)],
            ops in prop::collection::vec(op(1_000), 1..1_500),
        ) {
            // The bits below `shift` choose the bucket: equal for every key of one trie. At shift
            // 63 only the top bit is left, so nearly everything collides.
            let low_mask = if shift == 0 { 0 } else { u64::MAX >> (64 - shift) };
            let bucket = 0x5A5A_5A5A_5A5A_5A5A & low_mask;
            let hash = |k: u32| (hash_of(kind, k) & !low_mask) | bucket;
            let mut root = Arc::new(Node::empty());
            let mut model = HashMap::new();
            // Old roots with the model they stood for: persistence means they never change.
            let mut kept: Vec<(Root, HashMap<u32, u32>)> = Vec::new();
            for op in &ops {
                match *op {
                    Op::Insert(k, v) => {
                        let (node, old) = root.insert(hash(k), shift, k, v);
                        prop_assert_eq!(old, model.insert(k, v));
                        root = Arc::new(node);
                    }
                    Op::Remove(k) => {
                        let removed = root.remove(hash(k), shift, &k);
                        prop_assert_eq!(removed.as_ref().map(|r| r.value), model.remove(&k));
                        if let Some(r) = removed {
                            root = Arc::new(r.node);
                        }
                    }
                    Op::Get(k) => prop_assert_eq!(root.get(hash(k), shift, &k), model.get(&k)),
                    Op::Snapshot => kept.push((root.clone(), model.clone())),
                }
                prop_assert_eq!(check(&root, shift, bucket, true), model.len());
            }
            kept.push((root, model));
            for (root, model) in &kept {
                let it = Iter::new(vec![root.clone()]);
                prop_assert_eq!(it.len(), model.len());
                let all: HashMap<u32, u32> = it.collect();
                prop_assert_eq!(&all, model);
                prop_assert_eq!(root.len(), model.len());
            }
        }
    }

    #[test]
    fn a_removal_pulls_a_lone_leaf_up_the_whole_chain() {
        // Two keys whose hashes agree on all but the top bit: a chain of 12 one-child branches.
        let mut root = Node::empty();
        for (k, h) in [(1u32, 5u64), (2, 5 | 1 << 63)] {
            root = root.insert(h, 0, k, k).0;
        }
        assert_eq!(check(&root, 0, 0, true), 2);
        assert!(matches!(&root.children[0], Child::Branch(_)));
        let root = root.remove(5 | 1 << 63, 0, &2).expect("present").node;
        assert_eq!(check(&root, 0, 0, true), 1);
        assert!(
            matches!(&root.children[0], Child::Leaf(_)),
            "the chain collapsed"
        );
    }
}
