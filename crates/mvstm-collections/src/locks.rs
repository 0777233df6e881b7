//! `LockTable`: transactional locks on named resources, as persistent lock services offer them.
//!
//! The lock state is a [`TMap`] from resource to its holders; each holding records its owner and
//! the owners it agreed to share the resource with. A request takes a resource that is free, or
//! whose every current holder names the requester. A request for several resources takes all of
//! them or none, inside one transaction: with [`Wait::Block`] it retries until all are free, so
//! two overlapping multi-resource requests can never deadlock (neither ever holds part of its
//! set while waiting). Because the state lives in TVars, a caller can take locks and change other
//! state in one atomic step.

use crate::TMap;
use mvstm_core::{atomically, retry, StmResult, Txn};
use std::fmt;
use std::hash::Hash;

/// What a lock request does when a resource is not available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Retry (block) until every requested resource can be taken.
    Block,
    /// Take nothing and report the resources that could not be taken.
    NoWait,
}

/// One owner's hold on a resource.
#[derive(Clone, Debug, PartialEq)]
struct Holding<O> {
    owner: O,
    shared_with: Vec<O>,
}

/// Transactional locks on resources of type `R` held by owners of type `O`.
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::{LockTable, Wait};
/// let locks: LockTable<&str, u32> = LockTable::new();
/// // Owner 1 takes two resources at once, sharing "config" with owner 2.
/// atomically(|tx| locks.lock(tx, &["config", "db"], 1, &[2], Wait::Block)).unwrap();
/// // Owner 2 may join on "config"; owner 3 may not take "db".
/// assert_eq!(atomically(|tx| locks.lock(tx, &["config"], 2, &[], Wait::NoWait)), Ok(()));
/// assert_eq!(atomically(|tx| locks.lock(tx, &["db"], 3, &[], Wait::NoWait)), Err(vec!["db"]));
/// atomically(|tx| locks.unlock(tx, &["config", "db"], 1)).unwrap();
/// assert_eq!(atomically(|tx| locks.lock(tx, &["db"], 3, &[], Wait::NoWait)), Ok(()));
/// ```
pub struct LockTable<R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    held: TMap<R, Vec<Holding<O>>>,
}

/// An unlock named resources the owner does not hold (nothing was changed).
#[derive(Clone, PartialEq, Eq)]
pub struct NotHeld<R>(pub Vec<R>);

impl<R: fmt::Debug> fmt::Debug for NotHeld<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NotHeld").field(&self.0).finish()
    }
}

impl<R> fmt::Display for NotHeld<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => f.write_str("unlock of a resource the owner does not hold"),
            n => write!(f, "unlock of {n} resources the owner does not hold"),
        }
    }
}

impl<R: fmt::Debug> std::error::Error for NotHeld<R> {}

impl<R, O> LockTable<R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    /// A table with no locks held.
    ///
    /// ```
    /// use mvstm::{atomically, collections::LockTable};
    /// let locks: LockTable<String, u32> = LockTable::new();
    /// assert!(atomically(|tx| locks.holders(tx, &"db".to_string())).is_empty());
    /// ```
    pub fn new() -> LockTable<R, O> {
        LockTable { held: TMap::new() }
    }

    /// Take every resource of `resources` for `owner`, or none of them.
    ///
    /// `shared_with` names the owners that may hold these resources at the same time (each of
    /// them can take it while `owner` holds it). A resource can be taken when it is free, or
    /// when every current holder names `owner`; one the owner already holds counts as taken.
    /// If some cannot be taken: with [`Wait::Block`] the transaction retries (blocks) until they
    /// can; with [`Wait::NoWait`] nothing is taken and `Err` lists them.
    ///
    /// ```
    /// use mvstm::{atomically, collections::{LockTable, Wait}};
    /// let locks: LockTable<&str, &str> = LockTable::new();
    /// // All or none: "b" is taken, so "a" is not taken either.
    /// atomically(|tx| locks.lock(tx, &["b"], "alice", &[], Wait::Block)).unwrap();
    /// let refused = atomically(|tx| locks.lock(tx, &["a", "b"], "bob", &[], Wait::NoWait));
    /// assert_eq!(refused, Err(vec!["b"]));
    /// assert!(atomically(|tx| locks.holders(tx, &"a")).is_empty());
    /// ```
    pub fn lock(
        &self,
        tx: &mut Txn,
        resources: &[R],
        owner: O,
        shared_with: &[O],
        wait: Wait,
    ) -> StmResult<Result<(), Vec<R>>> {
        Ok(self
            .take(tx, resources, owner, shared_with, wait)?
            .map(drop))
    }

    /// `lock`, returning the resources it newly took (not those the owner already held).
    fn take(
        &self,
        tx: &mut Txn,
        resources: &[R],
        owner: O,
        shared_with: &[O],
        wait: Wait,
    ) -> StmResult<Result<Vec<R>, Vec<R>>> {
        let mut blocked = Vec::new();
        for r in resources {
            let holders = self.held.get(tx, r)?.unwrap_or_default();
            let holds = holders.iter().any(|h| h.owner == owner);
            if !holds && !holders.iter().all(|h| h.shared_with.contains(&owner)) {
                blocked.push(r.clone());
            }
        }
        if !blocked.is_empty() {
            return match wait {
                Wait::Block => retry(),
                Wait::NoWait => Ok(Err(blocked)),
            };
        }
        let mut taken = Vec::new();
        for r in resources {
            let mut holders = self.held.get(tx, r)?.unwrap_or_default();
            if !holders.iter().any(|h| h.owner == owner) {
                holders.push(Holding {
                    owner: owner.clone(),
                    shared_with: shared_with.to_vec(),
                });
                self.held.insert(tx, r.clone(), holders)?;
                taken.push(r.clone());
            }
        }
        Ok(Ok(taken))
    }

    /// Release `owner`'s hold on every resource of `resources`; if it does not hold some of
    /// them, nothing is released and `Err` lists those.
    ///
    /// ```
    /// use mvstm::{atomically, collections::{LockTable, NotHeld, Wait}};
    /// let locks: LockTable<u32, &str> = LockTable::new();
    /// atomically(|tx| locks.lock(tx, &[1], "alice", &[], Wait::Block)).unwrap();
    /// // Nothing is released when one of the resources is not held.
    /// assert_eq!(atomically(|tx| locks.unlock(tx, &[1, 2], "alice")), Err(NotHeld(vec![2])));
    /// assert_eq!(atomically(|tx| locks.unlock(tx, &[1], "alice")), Ok(()));
    /// ```
    pub fn unlock(
        &self,
        tx: &mut Txn,
        resources: &[R],
        owner: O,
    ) -> StmResult<Result<(), NotHeld<R>>> {
        let mut missing = Vec::new();
        for r in resources {
            let holders = self.held.get(tx, r)?.unwrap_or_default();
            if !holders.iter().any(|h| h.owner == owner) {
                missing.push(r.clone());
            }
        }
        if !missing.is_empty() {
            return Ok(Err(NotHeld(missing)));
        }
        self.release(tx, resources, &owner)?;
        Ok(Ok(()))
    }

    /// Drop `owner`'s hold on each of `resources` it holds; the others are left alone.
    fn release(&self, tx: &mut Txn, resources: &[R], owner: &O) -> StmResult<()> {
        for r in resources {
            self.held.update(tx, r.clone(), |holders| {
                let rest: Vec<Holding<O>> = holders
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|h| h.owner != *owner)
                    .collect();
                (!rest.is_empty()).then_some(rest)
            })?;
        }
        Ok(())
    }

    /// The owners holding `resource` now.
    ///
    /// ```
    /// use mvstm::{atomically, collections::{LockTable, Wait}};
    /// let locks: LockTable<&str, u32> = LockTable::new();
    /// atomically(|tx| locks.lock(tx, &["log"], 1, &[2], Wait::Block)).unwrap();
    /// atomically(|tx| locks.lock(tx, &["log"], 2, &[1], Wait::Block)).unwrap();
    /// assert_eq!(atomically(|tx| locks.holders(tx, &"log")), vec![1, 2]);
    /// ```
    pub fn holders(&self, tx: &mut Txn, resource: &R) -> StmResult<Vec<O>> {
        Ok(self
            .held
            .get(tx, resource)?
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.owner)
            .collect())
    }

    /// Take the resources in a transaction of its own and return a guard that releases them
    /// (in another transaction) when dropped, also when the thread unwinds from a panic.
    ///
    /// The guard releases only what this call newly took: resources the owner already held (by
    /// an outer guard, say) stay held. If the owner unlocked some of them meanwhile, the guard
    /// releases the rest. With [`Wait::NoWait`], `Err` lists the resources that could not be
    /// taken.
    ///
    /// # Panics
    ///
    /// Like `atomically`, if called inside a transaction; the guard must likewise be dropped
    /// outside any transaction body.
    ///
    /// ```
    /// use mvstm::collections::{LockTable, Wait};
    /// let locks: LockTable<u8, &str> = LockTable::new();
    /// {
    ///     let _guard = locks.scoped(&[1, 2], "worker", &[], Wait::Block).unwrap();
    ///     assert!(locks.scoped(&[2], "other", &[], Wait::NoWait).is_err());
    /// } // released here
    /// assert!(locks.scoped(&[2], "other", &[], Wait::NoWait).is_ok());
    /// ```
    pub fn scoped(
        &self,
        resources: &[R],
        owner: O,
        shared_with: &[O],
        wait: Wait,
    ) -> Result<LockGuard<'_, R, O>, Vec<R>> {
        let taken = atomically(|tx| self.take(tx, resources, owner.clone(), shared_with, wait))?;
        Ok(LockGuard {
            table: self,
            resources: taken,
            owner,
        })
    }
}

/// Holds resources of a [`LockTable`] until dropped (see [`LockTable::scoped`]).
pub struct LockGuard<'a, R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    table: &'a LockTable<R, O>,
    resources: Vec<R>,
    owner: O,
}

impl<R, O> LockGuard<'_, R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    /// The resources this guard took and releases when dropped.
    ///
    /// ```
    /// use mvstm::{atomically, collections::{LockTable, Wait}};
    /// let locks: LockTable<u8, &str> = LockTable::new();
    /// atomically(|tx| locks.lock(tx, &[1], "me", &[], Wait::Block)).unwrap();
    /// let guard = locks.scoped(&[1, 2], "me", &[], Wait::Block).unwrap();
    /// assert_eq!(guard.resources(), &[2]); // 1 was held already and stays held after the guard
    /// ```
    pub fn resources(&self) -> &[R] {
        &self.resources
    }
}

impl<R, O> Drop for LockGuard<'_, R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // Release what this guard took and the owner still holds (an explicit `unlock` may have
        // released some already); nothing else.
        atomically(|tx| self.table.release(tx, &self.resources, &self.owner));
    }
}

impl<R, O> Default for LockTable<R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        LockTable::new()
    }
}

impl<R, O> Clone for LockTable<R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    /// Another handle to the same table.
    fn clone(&self) -> Self {
        LockTable {
            held: self.held.clone(),
        }
    }
}

impl<R, O> fmt::Debug for LockTable<R, O>
where
    R: Hash + Eq + Clone + Send + Sync + 'static,
    O: Eq + Clone + Send + Sync + 'static,
{
    /// Shows no holdings: reading them takes a transaction.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockTable").finish_non_exhaustive()
    }
}
