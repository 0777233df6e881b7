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
//!
//! A `nested` part that is rolled back on its own (an abort it catches, or a panic) drops its
//! `on_commit` and `after_commit` hooks and *settles* its `on_abort` hooks: they keep their
//! place in the LIFO list but are told the part's cause, and they run when the attempt ends,
//! whatever its outcome: after a commit, before the `after_commit` hooks; after an abandon,
//! among the attempt's other `on_abort` hooks. They never run inside the body, so like every
//! `on_abort` hook they run outside the transaction, without the priority token, and may start
//! transactions.

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

/// An `on_abort` hook, with the cause it was settled with if the `nested` part that registered
/// it was rolled back (it then runs at the end of the attempt whatever the attempt's outcome).
pub(crate) struct OnAbort {
    hook: AbortHook,
    settled: Option<AbortCause>,
}

#[derive(Default)]
pub(crate) struct Hooks {
    on_abort: Vec<OnAbort>,
    on_commit: Vec<CommitHook>,
    after_commit: Vec<AfterHook>,
    /// Some hook was registered since the last `clear`: one load for the common, empty case.
    /// The lists are private so that every registration goes through a `push_*` that sets it.
    registered: bool,
    /// Some `on_abort` hook may be settled (`settle`): a commit must look for them.
    settled: bool,
}

/// Lengths of the hook lists at the start of an `or_else` branch or a `nested` part.
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

    /// Forget every hook registered since `mark` (an `or_else` branch that retried), settled
    /// ones included.
    pub(crate) fn rollback(&mut self, mark: HookMark) {
        self.on_abort.truncate(mark.on_abort);
        self.on_commit.truncate(mark.on_commit);
        self.after_commit.truncate(mark.after_commit);
    }

    /// A `nested` part that began at `mark` was rolled back with `cause`: drop its `on_commit`
    /// and `after_commit` hooks, and settle its `on_abort` hooks with `cause` (a hook settled
    /// by a deeper part keeps its own cause).
    pub(crate) fn settle(&mut self, mark: HookMark, cause: AbortCause) {
        self.on_commit.truncate(mark.on_commit);
        self.after_commit.truncate(mark.after_commit);
        if self.on_abort.len() > mark.on_abort {
            self.settled = true;
            for entry in &mut self.on_abort[mark.on_abort..] {
                entry.settled.get_or_insert(cause);
            }
        }
    }

    /// Whether no hook of any kind is registered (the common, free case).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        !self.registered
    }

    pub(crate) fn push_on_abort(&mut self, hook: AbortHook) {
        self.registered = true;
        self.on_abort.push(OnAbort {
            hook,
            settled: None,
        });
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

    /// Run the hooks of a committed attempt that are due, forget the others, and keep every
    /// list's capacity for the thread's next transaction: first the settled `on_abort` hooks
    /// of `nested` parts that were rolled back (LIFO), then the `after_commit` hooks (FIFO).
    /// All of them run; then the first panic resumes. The hooks cannot reach this `Hooks` (it
    /// lives in the thread's cached `Txn`, which user code never sees), so running them while
    /// it is borrowed is fine.
    pub(crate) fn run_after_commit(&mut self) {
        self.on_commit.clear();
        self.registered = false;
        let settled_panic = if std::mem::take(&mut self.settled) {
            let settled = self.on_abort.drain(..).rev().filter_map(|entry| {
                let cause = entry.settled?;
                Some((entry.hook, cause))
            });
            run_each(settled, |(hook, cause)| hook(cause))
        } else {
            self.on_abort.clear();
            None
        };
        let after_panic = run_each(self.after_commit.drain(..), |hook| hook());
        if let Some(panic) = settled_panic.or(after_panic) {
            resume_unwind(panic);
        }
    }

    /// Take the `on_abort` hooks of an abandoned attempt, and the others, which are not run but
    /// must only be dropped after the `on_abort` hooks ran (see `Txn::abandon`).
    pub(crate) fn take_on_abort(&mut self) -> (Vec<OnAbort>, Hooks) {
        let mut rest = std::mem::take(self);
        (std::mem::take(&mut rest.on_abort), rest)
    }

    pub(crate) fn clear(&mut self) {
        self.registered = false;
        self.settled = false;
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

/// Run the `on_abort` hooks of an attempt abandoned with `cause`, LIFO; a settled hook is told
/// its own cause instead. All run, then the first panic resumes.
pub(crate) fn run_on_abort(hooks: Vec<OnAbort>, cause: AbortCause) {
    let panic = run_each(hooks.into_iter().rev(), |entry| {
        (entry.hook)(entry.settled.unwrap_or(cause))
    });
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
}

/// Call each hook, even when one panics; hand back the first panic.
fn run_each<H>(
    hooks: impl Iterator<Item = H>,
    call: impl Fn(H),
) -> Option<Box<dyn std::any::Any + Send>> {
    let mut first_panic = None;
    for hook in hooks {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(hook))) {
            first_panic.get_or_insert(panic);
        }
    }
    first_panic
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn on_abort_runs_lifo_and_all_run_when_one_panics() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut hooks = Hooks::default();
        for i in 0..3 {
            let log = log.clone();
            hooks.push_on_abort(Box::new(move |_| {
                log.borrow_mut().push(i);
                if i == 1 {
                    panic!("hook 1");
                }
            }));
        }
        let (on_abort, _rest) = hooks.take_on_abort();
        let r = catch_unwind(AssertUnwindSafe(|| {
            run_on_abort(on_abort, AbortCause::Abort)
        }));
        assert!(r.is_err(), "the panic resumes");
        assert_eq!(*log.borrow(), vec![2, 1, 0]);
    }

    #[test]
    fn settled_hooks_keep_their_cause_and_run_at_commit() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut hooks = Hooks::default();
        let on_abort = |hooks: &mut Hooks, tag: &'static str| {
            let log = log.clone();
            hooks.push_on_abort(Box::new(move |cause| log.borrow_mut().push((tag, cause))));
        };
        let after = |hooks: &mut Hooks, tag: &'static str| {
            let log = log.clone();
            hooks.push_after_commit(Box::new(move || {
                log.borrow_mut().push((tag, AbortCause::Abort))
            }));
        };
        on_abort(&mut hooks, "outer");
        after(&mut hooks, "outer after");
        let mark = hooks.mark();
        on_abort(&mut hooks, "part");
        after(&mut hooks, "part after");
        hooks.push_on_commit(Box::new(|| panic!("a settled part's on_commit ran")));
        hooks.settle(mark, AbortCause::Abort);
        assert!(!hooks.has_on_commit());

        // Abandoned with another cause: the settled hook keeps its own.
        let (on_abort_hooks, _rest) = hooks.take_on_abort();
        run_on_abort(on_abort_hooks, AbortCause::Conflict);
        assert_eq!(
            *log.borrow(),
            vec![("part", AbortCause::Abort), ("outer", AbortCause::Conflict)]
        );

        // Committed: only the settled hook of the two `on_abort` hooks runs, before the
        // `after_commit` hooks.
        log.borrow_mut().clear();
        let mut hooks = Hooks::default();
        on_abort(&mut hooks, "outer");
        let mark = hooks.mark();
        on_abort(&mut hooks, "part");
        after(&mut hooks, "part after");
        hooks.settle(mark, AbortCause::Panic);
        after(&mut hooks, "outer after");
        hooks.run_after_commit();
        assert_eq!(
            *log.borrow(),
            vec![
                ("part", AbortCause::Panic),
                ("outer after", AbortCause::Abort)
            ]
        );
        assert!(hooks.is_empty());
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
