//! Per-attempt hooks: `on_abort`, `on_commit`/`try_on_commit` and `after_commit`.
//!
//! The contract (also in `docs/hooks.md`):
//!
//! | hook | runs | locks held | a failure |
//! |---|---|---|---|
//! | `on_abort` | after every abandoned attempt, LIFO | none | a panic resumes after the rest ran |
//! | `on_commit` | commit decided: writes locked, reads validated, not yet visible; FIFO | write set, and the read set held shared | `Err`/panic vetoes the commit |
//! | `after_commit` | values visible, locks released, waiters woken; FIFO | none | every hook runs; the first panic resumes afterwards |
//!
//! Hooks are boxed only when registered: a transaction without hooks loads one flag.
//! Registrations made inside an `or_else` branch that retried are truncated away with it.

use crate::error::{AbortCause, AbortError};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

pub(crate) type AbortHook = Box<dyn FnOnce(AbortCause)>;
pub(crate) type CommitHook = Box<dyn FnOnce() -> Result<(), AbortError>>;
pub(crate) type AfterHook = Box<dyn FnOnce()>;

/// Why `on_commit` hooks vetoed a commit.
pub(crate) enum Veto {
    Error(AbortError),
    Panic(Box<dyn std::any::Any + Send>),
}

#[derive(Default)]
pub(crate) struct Hooks {
    on_abort: Vec<AbortHook>,
    on_commit: Vec<CommitHook>,
    after_commit: Vec<AfterHook>,
    /// Some hook was registered since the last `clear`: one load for the common, empty case.
    /// The lists are private so that every registration goes through a `push_*` that sets it.
    registered: bool,
}

/// Lengths of the hook lists at the start of an `or_else` branch.
#[derive(Clone, Copy)]
pub(crate) struct HookMark {
    on_abort: usize,
    on_commit: usize,
    after_commit: usize,
}

impl Hooks {
    pub(crate) fn mark(&self) -> HookMark {
        HookMark {
            on_abort: self.on_abort.len(),
            on_commit: self.on_commit.len(),
            after_commit: self.after_commit.len(),
        }
    }

    pub(crate) fn rollback(&mut self, mark: HookMark) {
        self.on_abort.truncate(mark.on_abort);
        self.on_commit.truncate(mark.on_commit);
        self.after_commit.truncate(mark.after_commit);
    }

    /// Whether no hook of any kind is registered (the common, free case).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        !self.registered
    }

    pub(crate) fn push_on_abort(&mut self, hook: AbortHook) {
        self.registered = true;
        self.on_abort.push(hook);
    }

    pub(crate) fn push_on_commit(&mut self, hook: CommitHook) {
        self.registered = true;
        self.on_commit.push(hook);
    }

    pub(crate) fn push_after_commit(&mut self, hook: AfterHook) {
        self.registered = true;
        self.after_commit.push(hook);
    }

    /// Whether the commit must run `on_commit` hooks (and so take the path that holds reads).
    #[inline]
    pub(crate) fn has_on_commit(&self) -> bool {
        !self.on_commit.is_empty()
    }

    /// Run the `after_commit` hooks of a committed attempt (FIFO, all of them, then the first
    /// panic resumes) and forget the others, keeping every list's capacity for the thread's
    /// next transaction. The hooks cannot reach this `Hooks` (it lives in the thread's cached
    /// `Txn`, which user code never sees), so running them while it is borrowed is fine.
    pub(crate) fn run_after_commit(&mut self) {
        self.on_abort.clear();
        self.on_commit.clear();
        self.registered = false;
        run_all(self.after_commit.drain(..), |hook| hook());
    }

    /// Take the `on_abort` hooks of an abandoned attempt, and the others, which are not run but
    /// must only be dropped after the `on_abort` hooks ran (see `Txn::abandon`).
    pub(crate) fn take_on_abort(&mut self) -> (Vec<AbortHook>, Hooks) {
        let mut rest = std::mem::take(self);
        (std::mem::take(&mut rest.on_abort), rest)
    }

    pub(crate) fn clear(&mut self) {
        self.registered = false;
        self.on_abort.clear();
        self.on_commit.clear();
        self.after_commit.clear();
    }

    /// Run `on_commit` hooks in order; the first error or panic vetoes and drops the rest.
    #[inline]
    pub(crate) fn run_on_commit(&mut self) -> Result<(), Veto> {
        if self.on_commit.is_empty() {
            return Ok(());
        }
        let mut hooks = std::mem::take(&mut self.on_commit).into_iter();
        for hook in hooks.by_ref() {
            let veto = match catch_unwind(AssertUnwindSafe(hook)) {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => Veto::Error(e),
                Err(panic) => Veto::Panic(panic),
            };
            // The hooks not run go back to the list: the caller holds locks, and dropping them
            // runs user destructors, which happens later, in `abandon`, after the unlock.
            self.on_commit = hooks.collect();
            return Err(veto);
        }
        Ok(())
    }
}

/// Run `on_abort` hooks LIFO; all run, then the first panic resumes.
pub(crate) fn run_on_abort(hooks: Vec<AbortHook>, cause: AbortCause) {
    run_all(hooks.into_iter().rev(), |hook| hook(cause));
}

fn run_all<H>(hooks: impl Iterator<Item = H>, call: impl Fn(H)) {
    let mut first_panic = None;
    for hook in hooks {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(hook))) {
            first_panic.get_or_insert(panic);
        }
    }
    if let Some(panic) = first_panic {
        resume_unwind(panic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn on_abort_runs_lifo_and_all_run_when_one_panics() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let hooks: Vec<AbortHook> = (0..3)
            .map(|i| {
                let log = log.clone();
                Box::new(move |_| {
                    log.borrow_mut().push(i);
                    if i == 1 {
                        panic!("hook 1");
                    }
                }) as AbortHook
            })
            .collect();
        let r = catch_unwind(AssertUnwindSafe(|| run_on_abort(hooks, AbortCause::Abort)));
        assert!(r.is_err(), "the panic resumes");
        assert_eq!(*log.borrow(), vec![2, 1, 0]);
    }

    #[test]
    fn a_veto_stops_on_commit_hooks_and_hands_the_rest_back() {
        let mut hooks = Hooks::default();
        assert!(hooks.is_empty());
        hooks.push_on_commit(Box::new(|| Ok(())));
        hooks.push_on_commit(Box::new(|| Err(AbortError::new("no"))));
        hooks.push_on_commit(Box::new(|| panic!("must not run after a veto")));
        assert!(!hooks.is_empty() && hooks.has_on_commit());
        assert!(matches!(hooks.run_on_commit(), Err(Veto::Error(_))));
        assert!(
            hooks.has_on_commit(),
            "the unrun hook is kept for a later drop"
        );
        hooks.clear();
        assert!(hooks.is_empty());
    }
}
