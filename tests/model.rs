//! Random single-threaded programs checked against a trivially correct model.
//!
//! A program is a list of transactions over a few `TVar<i64>`s; each is a list of reads,
//! writes, additions, hook registrations and nested `or_else`s whose first branch may retry,
//! ending in a commit or a user abort. The model runs the same program on a `Vec<i64>` with
//! explicit copies for rollback. Every value read, the final state and the exact order in which
//! hooks ran must agree.

use mvstm::{try_atomically, AbortCause, StmResult, TVar, Txn};
use proptest::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

const VARS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Read(usize),
    Write(usize, i64),
    Add(usize, i64),
    /// Registers an `on_commit`, an `after_commit` and an `on_abort` hook tagged `id`.
    Hooks(u32),
    OrElse {
        first: Vec<Op>,
        first_retries: bool,
        second: Vec<Op>,
    },
}

#[derive(Debug, Clone)]
struct Program {
    txns: Vec<(Vec<Op>, bool)>, // (ops, commits?)
}

fn op() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        (0..VARS).prop_map(Op::Read),
        (0..VARS, -50i64..50).prop_map(|(v, x)| Op::Write(v, x)),
        (0..VARS, -5i64..5).prop_map(|(v, x)| Op::Add(v, x)),
        (0u32..1000).prop_map(Op::Hooks),
    ];
    leaf.prop_recursive(2, 24, 6, |inner| {
        (
            prop::collection::vec(inner.clone(), 0..5),
            any::<bool>(),
            prop::collection::vec(inner, 0..5),
        )
            .prop_map(|(first, first_retries, second)| Op::OrElse {
                first,
                first_retries,
                second,
            })
    })
}

fn program() -> impl Strategy<Value = Program> {
    prop::collection::vec(
        (
            prop::collection::vec(op(), 0..10),
            prop::bool::weighted(0.8),
        ),
        1..8,
    )
    .prop_map(|txns| Program { txns })
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    OnCommit(u32),
    AfterCommit(u32),
    OnAbort(u32, AbortCause),
}

type Log = Rc<RefCell<Vec<Event>>>;

fn run_stm(
    tx: &mut Txn,
    vars: &[TVar<i64>],
    ops: &[Op],
    reads: &mut Vec<i64>,
    log: &Log,
) -> StmResult<()> {
    for op in ops {
        match op {
            Op::Read(v) => reads.push(tx.read(&vars[*v])?),
            Op::Write(v, x) => tx.write(&vars[*v], *x)?,
            Op::Add(v, x) => tx.modify(&vars[*v], |old| old + x)?,
            Op::Hooks(id) => {
                let id = *id;
                let (a, b, c) = (log.clone(), log.clone(), log.clone());
                tx.on_commit(move || a.borrow_mut().push(Event::OnCommit(id)));
                tx.after_commit(move || b.borrow_mut().push(Event::AfterCommit(id)));
                tx.on_abort(move |cause| c.borrow_mut().push(Event::OnAbort(id, cause)));
            }
            Op::OrElse {
                first,
                first_retries,
                second,
            } => {
                // Both closures need the read log; only one runs at a time.
                let shared = RefCell::new(std::mem::take(reads));
                tx.or_else(
                    |tx| {
                        run_stm(tx, vars, first, &mut shared.borrow_mut(), log)?;
                        if *first_retries {
                            return mvstm::retry();
                        }
                        Ok(())
                    },
                    |tx| run_stm(tx, vars, second, &mut shared.borrow_mut(), log),
                )?;
                *reads = shared.into_inner();
            }
        }
    }
    Ok(())
}

/// The model: a state vector, hook lists, and copies for rollback.
#[derive(Default)]
struct Hooks {
    on_commit: Vec<u32>,
    after_commit: Vec<u32>,
    on_abort: Vec<u32>,
}

fn run_model(state: &mut Vec<i64>, ops: &[Op], reads: &mut Vec<i64>, hooks: &mut Hooks) {
    for op in ops {
        match op {
            Op::Read(v) => reads.push(state[*v]),
            Op::Write(v, x) => state[*v] = *x,
            Op::Add(v, x) => state[*v] += x,
            Op::Hooks(id) => {
                hooks.on_commit.push(*id);
                hooks.after_commit.push(*id);
                hooks.on_abort.push(*id);
            }
            Op::OrElse {
                first,
                first_retries,
                second,
            } => {
                let saved = state.clone();
                let marks = (
                    hooks.on_commit.len(),
                    hooks.after_commit.len(),
                    hooks.on_abort.len(),
                );
                run_model(state, first, reads, hooks);
                if *first_retries {
                    *state = saved;
                    hooks.on_commit.truncate(marks.0);
                    hooks.after_commit.truncate(marks.1);
                    hooks.on_abort.truncate(marks.2);
                    run_model(state, second, reads, hooks);
                }
            }
        }
    }
}

#[derive(Debug, PartialEq)]
struct Aborted;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn programs_match_the_model(program in program()) {
        let vars: Vec<TVar<i64>> = (0..VARS).map(|i| TVar::new(i as i64)).collect();
        let mut model: Vec<i64> = (0..VARS as i64).collect();
        for (ops, commits) in &program.txns {
            // mvstm
            let log: Log = Rc::new(RefCell::new(Vec::new()));
            let mut reads = Vec::new();
            let result: Result<(), Aborted> = try_atomically(|tx| {
                reads.clear();
                run_stm(tx, &vars, ops, &mut reads, &log)?;
                if *commits { Ok(()) } else { tx.abort(Aborted) }
            });
            // model
            let mut next = model.clone();
            let mut model_reads = Vec::new();
            let mut hooks = Hooks::default();
            run_model(&mut next, ops, &mut model_reads, &mut hooks);
            let expected_log: Vec<Event> = if *commits {
                model = next;
                hooks.on_commit.iter().map(|&id| Event::OnCommit(id))
                    .chain(hooks.after_commit.iter().map(|&id| Event::AfterCommit(id)))
                    .collect()
            } else {
                hooks.on_abort.iter().rev().map(|&id| Event::OnAbort(id, AbortCause::Abort)).collect()
            };
            prop_assert_eq!(result.is_ok(), *commits);
            prop_assert_eq!(&reads, &model_reads);
            prop_assert_eq!(&*log.borrow(), &expected_log);
            let state: Vec<i64> = vars.iter().map(TVar::load).collect();
            prop_assert_eq!(&state, &model);
        }
    }
}
