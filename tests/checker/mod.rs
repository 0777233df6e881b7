//! A history checker for transactional memories, after Adya's isolation anomalies and Elle's way
//! of finding them (Adya, *Weak Consistency: A Generalized Theory and Optimistic Implementations
//! for Distributed Transactions*, MIT 1999; Kingsbury and Alvaro, *Elle: Inferring Isolation
//! Anomalies from Experimental Observations*, VLDB 2020).
//!
//! # What is recorded
//!
//! Threads run random transactions over `u64` variables (`workload.rs`) and record *every
//! attempt* (`record.rs`): the ones that committed, and the ones that were abandoned (conflict,
//! `retry`, user abort, panic). An attempt gets a unique id from a global counter when its body
//! starts. For each attempt the recorder keeps
//!
//! * its *external* reads: `(variable, value)` pairs read from the shared state (a read of a
//!   variable the attempt already wrote is *internal*; the recorder checks on the spot that it
//!   returns the attempt's own latest write);
//! * its writes: `(variable, value, base)`, where `value = id << 16 | n` for the attempt's `n`-th
//!   write, so that **every value ever written is unique** and names its writer, and `base` is
//!   the value the attempt read from that variable before writing it. Every write is a
//!   **read-modify-write**; a write the attempt made twice to one variable leaves an
//!   *intermediate* value, and a write made in an `or_else` branch that retried is *discarded*;
//! * real-time stamps from a second global counter: `start` is taken before the attempt could
//!   have taken its snapshot (before `atomically` is called, or when the previous attempt of the
//!   same call was reported abandoned), `end` once its outcome is known (after `atomically`
//!   returned, or in its `on_abort` hook).
//!
//! Each thread appends to its own log; the logs are merged after the threads have joined.
//! Every variable starts at value 0, the version of a virtual initial transaction.
//!
//! # Version order from read-modify-writes
//!
//! Since values are unique, a value read names the exact version read, and its writer is
//! `value >> 16`. Since every write read its variable first, the committed write `(x, v, b)` was
//! installed directly after version `b` of `x`: the version order of each variable is the chain
//! `0 → v1 → v2 → …` that these *successor* links form. Two committed writes with the same base
//! are a **lost update** (both read the same version and both overwrote it); the chain must also
//! end at the variable's final value and hold every committed write of it.
//!
//! # The dependency graph
//!
//! Nodes are attempts. Edges, for a version `v` of `x` written by `T`, with successor `v'`
//! written by `U` (Adya's direct dependencies):
//!
//! * `ww`: `T → U` (U overwrote T's version);
//! * `wr`: `T → R` for every attempt `R` that read `v`;
//! * `rw` (anti-dependency): `R → U` for every `R` that read `v` (R saw the state before U);
//! * `rt` (real time): `A → B` whenever `A` ended before `B` started. Instead of the quadratic
//!   set, attempts sorted by end time form a chain of auxiliary nodes: `A → chain(end A)`,
//!   `chain(k) → chain(k+1)`, and `chain(last end before start B) → B`; a path exists exactly
//!   when the real-time order requires one.
//!
//! Reads are also checked one by one: reading a value no one wrote (garbage), a value written by
//! an aborted attempt or by a discarded branch (**G1a**, aborted read), or a value its writer
//! overwrote within the same transaction (**G1b**, intermediate read).
//!
//! # Cycles
//!
//! Strongly connected components come from an iterative Tarjan (`graph.rs`; histories have
//! millions of nodes, so no recursion). A component with more than one node holds a cycle; it is
//! classified by the smallest set of node and edge kinds that still leaves a cycle inside it:
//!
//! | class | nodes | edges | meaning |
//! |---|---|---|---|
//! | G0 | committed | ww | write cycle |
//! | G1c | committed | ww, wr | circular information flow |
//! | G2 | committed | ww, wr, rw | anti-dependency cycle: not serializable |
//! | real time | committed | + rt | serializable, not strictly serializable |
//! | opacity | + aborted | ww, wr, rw | an aborted attempt saw a state no serial order explains |
//! | opacity, real time | + aborted | + rt | the same, counting real time |
//!
//! **Why aborted attempts check opacity.** Opacity (Guerraoui and Kapalka) asks that every
//! transaction, committed or not, observe a state explained by one serial order that respects
//! real time. An aborted attempt's writes never took effect, so it enters the graph as a
//! read-only node: `wr` edges into it from the versions it read, `rw` edges out of it to the
//! writers of the next versions, and `rt` edges. If it read `x` before some `U` and `y` after
//! `U` (a torn view, the stuff zombie transactions are made of), then `A -rw-> U -wr-> A` is a
//! cycle. Since an aborted node has no `ww` and no outgoing `wr` edge, adding it can only create
//! cycles through itself: the committed graph stays what it was.
//!
//! **Why real-time edges are sound here.** Stamps come from one atomic counter with `SeqCst`
//! read-modify-writes, so `end(A) < start(B)` means `A`'s end happens-before `B`'s start; a
//! strictly serializable STM must then serialize `A` first. Attempt intervals are tight but
//! safe: an attempt takes its snapshot after its start stamp and has taken every value before
//! its end stamp.

#![allow(dead_code)]

pub mod graph;
pub mod record;
pub mod toy;
pub mod workload;

pub use graph::{check, Report};

use std::fmt;

/// The kinds of anomaly the checker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A read of a variable the attempt had written did not return its own latest write.
    InternalRead,
    /// An attempt with no reported outcome, or an outcome reported without a running attempt.
    Outcome,
    /// A read returned a value that was never written to that variable.
    GarbageRead,
    /// Two committed transactions overwrote the same version of a variable.
    LostUpdate,
    /// Aborted read: a value written by an aborted attempt or a discarded `or_else` branch.
    G1a,
    /// Intermediate read: a value its writer overwrote within the same transaction.
    G1b,
    /// A cycle of write dependencies among committed transactions.
    G0,
    /// A cycle of write and read dependencies among committed transactions.
    G1c,
    /// A cycle with anti-dependencies among committed transactions (not serializable).
    G2,
    /// A cycle among committed transactions that needs real-time edges (not strictly
    /// serializable).
    RealTime,
    /// A cycle through an aborted attempt, without real-time edges (not opaque).
    Opacity,
    /// A cycle through an aborted attempt that needs real-time edges (not opaque).
    OpacityRealTime,
    /// The final state is not the end of a variable's version chain, or the chain misses a
    /// committed write.
    FinalState,
}

impl Class {
    /// The classes that a serializable history can show.
    pub const SERIALIZABILITY: [Class; 8] = [
        Class::InternalRead,
        Class::GarbageRead,
        Class::LostUpdate,
        Class::G1a,
        Class::G1b,
        Class::G0,
        Class::G1c,
        Class::G2,
    ];
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::InternalRead => "internal read",
            Class::Outcome => "attempt outcome",
            Class::GarbageRead => "garbage read",
            Class::LostUpdate => "lost update",
            Class::G1a => "G1a (aborted read)",
            Class::G1b => "G1b (intermediate read)",
            Class::G0 => "G0 (write cycle)",
            Class::G1c => "G1c (circular information flow)",
            Class::G2 => "G2 (anti-dependency cycle)",
            Class::RealTime => "real-time cycle (not strictly serializable)",
            Class::Opacity => "opacity (cycle through an aborted attempt)",
            Class::OpacityRealTime => "opacity with real time (cycle through an aborted attempt)",
            Class::FinalState => "final state",
        })
    }
}
