//! Recording attempts: per-thread logs, merged into a [`History`] once the threads are done.
//!
//! A [`Recording`] holds the two global counters (attempt ids and real-time stamps) and collects
//! the logs; each thread records through its own [`Recorder`], so the hot path takes no lock:
//! two `fetch_add`s per attempt and pushes onto the thread's vectors.

use super::Class;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Low bits of a written value that number the writes of one attempt.
pub const ORDINAL_BITS: u32 = 16;
/// Every variable's initial value (the version of the virtual initial transaction).
pub const INITIAL: u64 = 0;

/// The id of the attempt that wrote `value` (0 for the initial value).
pub fn writer_of(value: u64) -> u64 {
    value >> ORDINAL_BITS
}

/// Why an attempt was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    Conflict,
    Retry,
    Abort,
    Panic,
    /// The body started again: the previous attempt was abandoned, for a reason not reported
    /// (recording without `on_abort` hooks).
    Rerun,
    /// No outcome was ever reported for the attempt (a recorder problem or a lost hook).
    Unreported,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted(Cause),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// The attempt's last live write to the variable: what a commit installs.
    Final,
    /// Overwritten later by the same attempt: must never be seen by another one.
    Intermediate,
    /// Made in an `or_else` branch that retried: rolled back with it.
    Discarded,
}

#[derive(Clone, Copy, Debug)]
pub struct Read {
    pub var: u32,
    pub value: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Write {
    pub value: u64,
    /// The value the attempt read from `var` before writing it: the version this write follows.
    pub base: u64,
    pub var: u32,
    pub kind: WriteKind,
}

#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: u64,
    /// Taken before the attempt could take its snapshot.
    pub start: u64,
    /// Taken once the attempt's outcome was known.
    pub end: u64,
    pub outcome: Outcome,
    /// Its external reads in [`History::reads`] (`u32` positions keep millions of attempts
    /// small).
    read_span: Range<u32>,
    /// Its writes in [`History::writes`].
    write_span: Range<u32>,
}

impl Attempt {
    pub fn committed(&self) -> bool {
        self.outcome == Outcome::Committed
    }

    /// Positions of its external reads in [`History::reads`].
    pub fn reads(&self) -> Range<usize> {
        self.read_span.start as usize..self.read_span.end as usize
    }

    /// Positions of its writes in [`History::writes`].
    pub fn writes(&self) -> Range<usize> {
        self.write_span.start as usize..self.write_span.end as usize
    }
}

fn span(range: Range<usize>) -> Range<u32> {
    let narrow = |i: usize| u32::try_from(i).expect("fewer than 2^32 reads and writes");
    narrow(range.start)..narrow(range.end)
}

/// How abandoned attempts are reported to the recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporting {
    /// The driver reports each one ([`Recorder::aborted`], typically from an `on_abort` hook):
    /// an attempt that starts while the previous one has no outcome is a problem.
    Explicit,
    /// A body that starts again reports the previous attempt abandoned ([`Cause::Rerun`]); its
    /// end is then only known as the start of the next body, which is after the next snapshot,
    /// so the next attempt keeps the previous one's start stamp.
    Reruns,
}

#[derive(Default)]
struct ThreadLog {
    attempts: Vec<Attempt>,
    reads: Vec<Read>,
    writes: Vec<Write>,
    problems: Vec<(Class, String)>,
}

/// The shared side of a recording: counters and the finished threads' logs.
pub struct Recording {
    vars: usize,
    ids: AtomicU64,
    clock: AtomicU64,
    logs: Mutex<Vec<ThreadLog>>,
}

impl Recording {
    pub fn new(vars: usize) -> Arc<Recording> {
        assert!(vars <= u32::MAX as usize);
        Arc::new(Recording {
            vars,
            ids: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            logs: Mutex::new(Vec::new()),
        })
    }

    /// A recorder for one thread; its log joins the recording when it is dropped.
    pub fn recorder(self: &Arc<Self>, reporting: Reporting) -> Recorder {
        Recorder {
            recording: self.clone(),
            reporting,
            log: ThreadLog::default(),
            current: None,
            next_start: 0,
            seen: Vec::new(),
        }
    }

    /// A real-time stamp. `SeqCst` read-modify-writes on one counter: a stamp taken after
    /// another in this order happens after it (the RMWs form one release sequence), which is
    /// what makes real-time edges sound.
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Merge the logs of every dropped recorder. Call once all recorders are gone.
    pub fn history(&self) -> History {
        let logs = std::mem::take(&mut *self.logs.lock().unwrap());
        let n = self.ids.load(Ordering::SeqCst) as usize;
        let mut slots: Vec<Option<Attempt>> = vec![None; n];
        let mut history = History {
            vars: self.vars,
            attempts: Vec::new(),
            reads: Vec::with_capacity(logs.iter().map(|l| l.reads.len()).sum()),
            writes: Vec::with_capacity(logs.iter().map(|l| l.writes.len()).sum()),
            problems: Vec::new(),
        };
        for log in logs {
            let (r0, w0) = (history.reads.len(), history.writes.len());
            history.reads.extend_from_slice(&log.reads);
            history.writes.extend_from_slice(&log.writes);
            history.problems.extend(log.problems);
            for mut a in log.attempts {
                a.read_span = span(a.reads().start + r0..a.reads().end + r0);
                a.write_span = span(a.writes().start + w0..a.writes().end + w0);
                let slot = &mut slots[a.id as usize - 1];
                if slot.is_some() {
                    history
                        .problems
                        .push((Class::Outcome, format!("attempt {} recorded twice", a.id)));
                }
                *slot = Some(a);
            }
        }
        history.attempts = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                slot.unwrap_or_else(|| {
                    history.problems.push((
                        Class::Outcome,
                        format!("attempt {} was never recorded", i + 1),
                    ));
                    let (r, w) = (history.reads.len(), history.writes.len());
                    Attempt {
                        id: i as u64 + 1,
                        start: 0,
                        end: u64::MAX,
                        outcome: Outcome::Aborted(Cause::Unreported),
                        read_span: span(r..r),
                        write_span: span(w..w),
                    }
                })
            })
            .collect();
        history
    }
}

/// A merged history: attempt `id` is `attempts[id - 1]`.
pub struct History {
    pub vars: usize,
    pub attempts: Vec<Attempt>,
    pub reads: Vec<Read>,
    pub writes: Vec<Write>,
    /// Anomalies the recorders saw on the spot (internal reads, outcomes).
    pub problems: Vec<(Class, String)>,
}

struct Current {
    id: u64,
    start: u64,
    reads: usize,
    writes: usize,
    ordinal: u64,
}

/// One thread's recorder.
///
/// A driver calls [`call_begin`](Recorder::call_begin) before each transaction,
/// [`attempt_begin`](Recorder::attempt_begin) first thing in the body, [`read`](Recorder::read)
/// after each read, [`write`](Recorder::write) to get the value to write, and reports the
/// outcome with [`committed`](Recorder::committed) or [`aborted`](Recorder::aborted).
pub struct Recorder {
    recording: Arc<Recording>,
    reporting: Reporting,
    log: ThreadLog,
    current: Option<Current>,
    next_start: u64,
    /// Scratch for classifying an attempt's writes.
    seen: Vec<u32>,
}

impl Recorder {
    /// A transaction (a call of `atomically`) is about to start.
    pub fn call_begin(&mut self) {
        if self.current.is_some() {
            self.unclosed("a new transaction began");
        }
        self.next_start = self.recording.tick();
    }

    /// A body starts: a new attempt. Returns its id.
    pub fn attempt_begin(&mut self) -> u64 {
        if let Some(previous) = &self.current {
            match self.reporting {
                Reporting::Explicit => self.unclosed("the next attempt began"),
                Reporting::Reruns => {
                    let start = previous.start;
                    self.close(Outcome::Aborted(Cause::Rerun));
                    self.next_start = start;
                }
            }
        }
        // Relaxed: the id only has to be unique.
        let id = self.recording.ids.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(id < 1 << (64 - ORDINAL_BITS), "attempt ids overflow values");
        self.current = Some(Current {
            id,
            start: self.next_start,
            reads: self.log.reads.len(),
            writes: self.log.writes.len(),
            ordinal: 0,
        });
        id
    }

    /// The attempt read `value` from `var`.
    pub fn read(&mut self, var: usize, value: u64) {
        let current = self.current.as_ref().expect("a read outside an attempt");
        let own = self.log.writes[current.writes..]
            .iter()
            .rev()
            .find(|w| w.var == var as u32 && w.kind != WriteKind::Discarded);
        match own {
            Some(w) if w.value != value => {
                let message = format!(
                    "attempt {} read {value:#x} from x{var} after writing {:#x}",
                    current.id, w.value
                );
                self.log.problems.push((Class::InternalRead, message));
            }
            Some(_) => {}
            None => self.log.reads.push(Read {
                var: var as u32,
                value,
            }),
        }
    }

    /// The attempt is about to write `var`: the unique value to write. The attempt must have
    /// read `var` before (a read-modify-write), or the version order could not be recovered.
    pub fn write(&mut self, var: usize) -> u64 {
        let current = self.current.as_mut().expect("a write outside an attempt");
        current.ordinal += 1;
        assert!(current.ordinal < 1 << ORDINAL_BITS, "too many writes");
        let value = current.id << ORDINAL_BITS | current.ordinal;
        let base = self.log.reads[current.reads..]
            .iter()
            .find(|r| r.var == var as u32)
            .map(|r| r.value)
            .expect("a write must follow a read of the same variable in the attempt");
        self.log.writes.push(Write {
            var: var as u32,
            value,
            base,
            kind: WriteKind::Final,
        });
        value
    }

    /// A mark to roll back to if the `or_else` branch starting now retries.
    pub fn mark(&self) -> usize {
        self.log.writes.len()
    }

    /// The `or_else` branch started at `mark` retried: its writes are discarded.
    pub fn roll_back(&mut self, mark: usize) {
        for w in &mut self.log.writes[mark..] {
            w.kind = WriteKind::Discarded;
        }
    }

    /// The running attempt committed (its call returned).
    pub fn committed(&mut self) {
        self.finish(Outcome::Committed);
    }

    /// The running attempt was abandoned.
    pub fn aborted(&mut self, cause: Cause) {
        self.finish(Outcome::Aborted(cause));
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.current.is_none() {
            self.log.problems.push((
                Class::Outcome,
                format!("outcome {outcome:?} reported while no attempt runs"),
            ));
            return;
        }
        self.close(outcome);
    }

    fn unclosed(&mut self, when: &str) {
        let id = self.current.as_ref().map_or(0, |c| c.id);
        self.log.problems.push((
            Class::Outcome,
            format!("attempt {id} had no outcome when {when}"),
        ));
        self.close(Outcome::Aborted(Cause::Unreported));
    }

    fn close(&mut self, outcome: Outcome) {
        let end = self.recording.tick();
        let current = self.current.take().expect("an attempt to close");
        // The last live write to each variable is final, earlier ones are intermediate.
        self.seen.clear();
        for w in self.log.writes[current.writes..].iter_mut().rev() {
            if w.kind == WriteKind::Discarded {
                continue;
            }
            if self.seen.contains(&w.var) {
                w.kind = WriteKind::Intermediate;
            } else {
                self.seen.push(w.var);
                w.kind = WriteKind::Final;
            }
        }
        self.log.attempts.push(Attempt {
            id: current.id,
            start: current.start,
            end,
            outcome,
            read_span: span(current.reads..self.log.reads.len()),
            write_span: span(current.writes..self.log.writes.len()),
        });
        self.next_start = end;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.current.is_some() {
            self.unclosed("its thread's recorder was dropped");
        }
        let log = std::mem::take(&mut self.log);
        self.recording
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(log);
    }
}
