//! Checking a [`History`]: read anomalies, version chains, the dependency graph and its cycles.
//!
//! Everything is indexed by position, without hashing: attempt `id` is node `id - 1`, a value
//! names its writer, and a version's successor is stored beside its write. The graph is built in
//! compressed-sparse-row form by generating the edges twice (count, then fill).

use super::record::{writer_of, Attempt, Cause, History, Outcome, WriteKind, INITIAL};
use super::Class;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const ALL_EDGES: u8 = WW | WR | RW | RT;

const COMMITTED: u8 = 1;
const ABORTED: u8 = 2;
const CHAIN: u8 = 4;

/// The source of a read or of a write's base: a write index, or one of these.
const NOT_A_VERSION: u32 = u32::MAX;
const INITIAL_VERSION: u32 = u32::MAX - 1;
/// No successor, no component.
const NONE: u32 = u32::MAX;

/// How many examples of each class a report keeps.
const EXAMPLES_PER_CLASS: usize = 3;

/// The layers a cyclic component is searched in, from the strongest claim to the weakest: the
/// first one that still has a cycle names the anomaly.
const LAYERS: [(Class, u8, u8); 6] = [
    (Class::G0, COMMITTED, WW),
    (Class::G1c, COMMITTED, WW | WR),
    (Class::G2, COMMITTED, WW | WR | RW),
    (Class::RealTime, COMMITTED | CHAIN, ALL_EDGES),
    (Class::Opacity, COMMITTED | ABORTED, WW | WR | RW),
    (
        Class::OpacityRealTime,
        COMMITTED | ABORTED | CHAIN,
        ALL_EDGES,
    ),
];

/// What the checker found, with the figures of the history.
#[derive(Default)]
pub struct Report {
    pub attempts: usize,
    pub committed: usize,
    pub aborted: BTreeMap<Cause, usize>,
    pub reads: usize,
    pub writes: usize,
    pub nodes: usize,
    /// Edges by kind: ww, wr, rw, rt.
    pub edges: [usize; 4],
    /// Strongly connected components with more than one node.
    pub cyclic_components: usize,
    pub counts: BTreeMap<Class, usize>,
    pub examples: Vec<(Class, String)>,
}

impl Report {
    pub fn count(&self, class: Class) -> usize {
        self.counts.get(&class).copied().unwrap_or(0)
    }

    pub fn anomalies(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn total_edges(&self) -> usize {
        self.edges.iter().sum()
    }

    fn note(&mut self, class: Class, example: impl FnOnce() -> String) {
        let n = self.counts.entry(class).or_insert(0);
        *n += 1;
        if *n <= EXAMPLES_PER_CLASS {
            self.examples.push((class, example()));
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aborted: usize = self.aborted.values().sum();
        write!(
            f,
            "{} attempts: {} committed, {} aborted",
            self.attempts, self.committed, aborted
        )?;
        for (i, (cause, n)) in self.aborted.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{cause:?} {n}")?;
        }
        if aborted > 0 {
            f.write_str(")")?;
        }
        writeln!(f, "; {} reads, {} writes", self.reads, self.writes)?;
        let [ww, wr, rw, rt] = self.edges;
        writeln!(
            f,
            "graph: {} nodes, {} edges (ww {ww}, wr {wr}, rw {rw}, rt {rt}), {} cyclic components",
            self.nodes,
            self.total_edges(),
            self.cyclic_components
        )?;
        if self.counts.is_empty() {
            return write!(f, "anomalies: none");
        }
        write!(f, "anomalies: {}", self.anomalies())?;
        for (class, n) in &self.counts {
            write!(f, "\n  {class}: {n}")?;
            for (c, example) in &self.examples {
                if c == class {
                    write!(f, "\n    e.g. {example}")?;
                }
            }
        }
        Ok(())
    }
}

/// Check `history`; `final_state`, if given, holds each variable's value after every thread
/// finished.
pub fn check(history: &History, final_state: Option<&[u64]>) -> Report {
    let checker = Checker::new(history);
    let mut report = Report {
        attempts: history.attempts.len(),
        reads: history.reads.len(),
        writes: history.writes.len(),
        ..Report::default()
    };
    for a in &history.attempts {
        match a.outcome {
            Outcome::Committed => report.committed += 1,
            Outcome::Aborted(cause) => *report.aborted.entry(cause).or_insert(0) += 1,
        }
    }
    for (class, message) in &history.problems {
        report.note(*class, || message.clone());
    }
    checker.check_reads(&mut report);
    checker.check_lost_updates(&mut report);
    if let Some(state) = final_state {
        checker.check_final_state(state, &mut report);
    }
    checker.check_cycles(&mut report);
    report
}

struct Checker<'h> {
    h: &'h History,
    /// The attempt (node) of each write.
    owner: Vec<u32>,
    /// The version each read returned.
    read_src: Vec<u32>,
    /// The version each write overwrote.
    base_src: Vec<u32>,
    /// The committed write installed right after each write's version (if it is one).
    succ: Vec<u32>,
    /// The same for each variable's initial version.
    initial_succ: Vec<u32>,
    /// Pairs of committed writes that overwrote the same version.
    lost: Vec<(u32, u32, u32)>,
    /// The successors of a version beyond the first (lost updates), by [`Checker::key`]: every
    /// reader of the version gets an anti-dependency to each of them.
    more_succ: HashMap<u64, Vec<u32>>,
}

impl<'h> Checker<'h> {
    fn new(h: &'h History) -> Checker<'h> {
        assert!(h.writes.len() < INITIAL_VERSION as usize);
        assert!(h.attempts.len() < (u32::MAX / 2) as usize);
        let mut owner = vec![NONE; h.writes.len()];
        for (i, a) in h.attempts.iter().enumerate() {
            for w in a.writes() {
                owner[w] = i as u32;
            }
        }
        let mut c = Checker {
            h,
            owner,
            read_src: Vec::new(),
            base_src: Vec::new(),
            succ: vec![NONE; h.writes.len()],
            initial_succ: vec![NONE; h.vars],
            lost: Vec::new(),
            more_succ: HashMap::new(),
        };
        c.read_src = h.reads.iter().map(|r| c.resolve(r.var, r.value)).collect();
        c.base_src = h.writes.iter().map(|w| c.resolve(w.var, w.base)).collect();
        // Successor links: a committed final write follows the version it read.
        for (i, a) in h.attempts.iter().enumerate() {
            if !a.committed() {
                continue;
            }
            for w in a.writes() {
                if h.writes[w].kind != WriteKind::Final {
                    continue;
                }
                let base = c.base_src[w];
                if !c.valid(base) {
                    continue; // the base read itself is reported by check_reads
                }
                let var = h.writes[w].var;
                match *c.slot(base, var) {
                    NONE => *c.slot(base, var) = i as u32,
                    other => {
                        c.lost.push((var, other, i as u32));
                        let key = Checker::key(base, var);
                        c.more_succ.entry(key).or_default().push(i as u32);
                    }
                }
            }
        }
        c
    }

    /// The write that put `value` into `var`.
    fn resolve(&self, var: u32, value: u64) -> u32 {
        if value == INITIAL {
            return INITIAL_VERSION;
        }
        let id = writer_of(value) as usize;
        if id == 0 || id > self.h.attempts.len() {
            return NOT_A_VERSION;
        }
        for w in self.h.attempts[id - 1].writes() {
            let write = &self.h.writes[w];
            if write.value == value {
                return if write.var == var {
                    w as u32
                } else {
                    NOT_A_VERSION
                };
            }
        }
        NOT_A_VERSION
    }

    /// Whether `src` is a version of the committed state: initial, or a committed final write.
    fn valid(&self, src: u32) -> bool {
        match src {
            NOT_A_VERSION => false,
            INITIAL_VERSION => true,
            w => {
                self.h.writes[w as usize].kind == WriteKind::Final
                    && self.h.attempts[self.owner[w as usize] as usize].committed()
            }
        }
    }

    fn slot(&mut self, src: u32, var: u32) -> &mut u32 {
        if src == INITIAL_VERSION {
            &mut self.initial_succ[var as usize]
        } else {
            &mut self.succ[src as usize]
        }
    }

    fn key(src: u32, var: u32) -> u64 {
        if src == INITIAL_VERSION {
            u64::from(var) << 32 | u64::from(src)
        } else {
            u64::from(src)
        }
    }

    /// Every committed write that overwrote version `src` of `var` (more than one: lost
    /// updates).
    fn successors(&self, src: u32, var: u32) -> impl Iterator<Item = u32> + '_ {
        let first = Some(self.successor(src, var)).filter(|&s| s != NONE);
        let more = if self.more_succ.is_empty() {
            None
        } else {
            self.more_succ.get(&Checker::key(src, var))
        };
        first.into_iter().chain(more.into_iter().flatten().copied())
    }

    fn successor(&self, src: u32, var: u32) -> u32 {
        if src == INITIAL_VERSION {
            self.initial_succ[var as usize]
        } else {
            self.succ[src as usize]
        }
    }

    fn name(&self, node: u32) -> String {
        let a = &self.h.attempts[node as usize];
        match a.outcome {
            Outcome::Committed => format!("T{}", a.id),
            Outcome::Aborted(cause) => format!("T{}({cause:?})", a.id),
        }
    }

    fn check_reads(&self, report: &mut Report) {
        for (i, a) in self.h.attempts.iter().enumerate() {
            for r in a.reads() {
                let (read, src) = (self.h.reads[r], self.read_src[r]);
                if src == NOT_A_VERSION || src == INITIAL_VERSION {
                    if src == NOT_A_VERSION {
                        report.note(Class::GarbageRead, || {
                            format!(
                                "{} read {:#x} from x{}, never written there",
                                self.name(i as u32),
                                read.value,
                                read.var
                            )
                        });
                    }
                    continue;
                }
                let writer = self.owner[src as usize];
                let class = if writer == i as u32 {
                    Some(Class::InternalRead) // an external read returned the attempt's own write
                } else if !self.h.attempts[writer as usize].committed() {
                    Some(Class::G1a)
                } else {
                    match self.h.writes[src as usize].kind {
                        WriteKind::Final => None,
                        WriteKind::Intermediate => Some(Class::G1b),
                        WriteKind::Discarded => Some(Class::G1a),
                    }
                };
                if let Some(class) = class {
                    report.note(class, || {
                        format!(
                            "{} read x{}={:#x} ({:?} write of {})",
                            self.name(i as u32),
                            read.var,
                            read.value,
                            self.h.writes[src as usize].kind,
                            self.name(writer)
                        )
                    });
                }
            }
        }
    }

    fn check_lost_updates(&self, report: &mut Report) {
        for &(var, first, second) in &self.lost {
            report.note(Class::LostUpdate, || {
                format!(
                    "{} and {} both overwrote the same version of x{var}",
                    self.name(first),
                    self.name(second)
                )
            });
        }
    }

    /// Walk each variable's chain from its initial version: it must hold every committed write
    /// of the variable and end at its final value.
    fn check_final_state(&self, state: &[u64], report: &mut Report) {
        assert_eq!(state.len(), self.h.vars, "one final value per variable");
        let mut committed_writes = vec![0usize; self.h.vars];
        for a in self.h.attempts.iter().filter(|a| a.committed()) {
            for w in a.writes() {
                if self.h.writes[w].kind == WriteKind::Final {
                    committed_writes[self.h.writes[w].var as usize] += 1;
                }
            }
        }
        for (var, &expected) in committed_writes.iter().enumerate() {
            let var32 = var as u32;
            let (mut src, mut value, mut steps) = (INITIAL_VERSION, INITIAL, 0usize);
            while steps <= expected {
                let next = self.successor(src, var32);
                if next == NONE {
                    break;
                }
                let a = &self.h.attempts[next as usize];
                let Some(w) = a.writes().find(|&w| {
                    self.h.writes[w].var == var32 && self.h.writes[w].kind == WriteKind::Final
                }) else {
                    break;
                };
                (src, value, steps) = (w as u32, self.h.writes[w].value, steps + 1);
            }
            if steps != expected {
                report.note(Class::FinalState, || {
                    format!("x{var}: {expected} committed writes, {steps} in its version chain")
                });
            }
            if value != state[var] {
                report.note(Class::FinalState, || {
                    format!(
                        "x{var} ends at {:#x}, its version chain at {value:#x}",
                        state[var]
                    )
                });
            }
        }
    }

    /// Call `edge(from, to, kind)` for every edge of the full graph.
    fn for_each_edge(&self, chain: &Chain, mut edge: impl FnMut(u32, u32, u8)) {
        for (i, a) in self.h.attempts.iter().enumerate() {
            let i = i as u32;
            if a.committed() {
                for w in a.writes() {
                    let base = self.base_src[w];
                    if self.h.writes[w].kind == WriteKind::Final
                        && base != INITIAL_VERSION
                        && self.valid(base)
                        && self.owner[base as usize] != i
                    {
                        edge(self.owner[base as usize], i, WW);
                    }
                }
            }
            for r in a.reads() {
                let src = self.read_src[r];
                if !self.valid(src) {
                    continue;
                }
                if src != INITIAL_VERSION && self.owner[src as usize] != i {
                    edge(self.owner[src as usize], i, WR);
                }
                for next in self.successors(src, self.h.reads[r].var) {
                    if next != i {
                        edge(i, next, RW);
                    }
                }
            }
        }
        chain.for_each_edge(edge);
    }

    fn check_cycles(&self, report: &mut Report) {
        let n = self.h.attempts.len();
        let chain = Chain::new(&self.h.attempts);
        let graph = Graph::build(2 * n, |edge| self.for_each_edge(&chain, edge));
        report.nodes = 2 * n;
        report.edges = graph.counts;
        let mut node_kind = vec![CHAIN; 2 * n];
        for (i, a) in self.h.attempts.iter().enumerate() {
            node_kind[i] = if a.committed() { COMMITTED } else { ABORTED };
        }

        let mut tarjan = Tarjan::new(2 * n);
        let components = tarjan.components(&graph, 0..2 * n as u32, |_| true, ALL_EDGES);
        report.cyclic_components = components.len();
        let mut component_of = vec![NONE; 2 * n];
        for (c, members) in components.iter().enumerate() {
            for &v in members {
                component_of[v as usize] = c as u32;
            }
        }
        for (c, members) in components.iter().enumerate() {
            for &(class, nodes, edges) in &LAYERS {
                let allowed = |v: u32| {
                    component_of[v as usize] == c as u32 && node_kind[v as usize] & nodes != 0
                };
                let found = tarjan.components(&graph, members.iter().copied(), allowed, edges);
                if let Some(cycle_nodes) = found.first() {
                    report.note(class, || {
                        let cycle = find_cycle(&graph, cycle_nodes, edges);
                        self.describe(&cycle, n as u32)
                    });
                    break;
                }
            }
        }
    }

    /// `T1 -ww x3-> T2 -rw x0-> T1`, with runs through the real-time chain shortened to `-rt->`.
    fn describe(&self, cycle: &[(u32, u32, u8)], n: u32) -> String {
        // Start at an attempt: chain nodes have no name.
        let mut cycle = cycle.to_vec();
        let first_attempt = cycle.iter().position(|&(from, _, _)| from < n).unwrap_or(0);
        cycle.rotate_left(first_attempt);
        let mut out = String::new();
        for &(from, to, kind) in &cycle {
            if from < n {
                out.push_str(&self.name(from));
            }
            match kind {
                RT if to < n => out.push_str(" -rt-> "),
                RT => {}
                _ => {
                    let kind_name = match kind {
                        WW => "ww",
                        WR => "wr",
                        _ => "rw",
                    };
                    out.push_str(&format!(
                        " -{kind_name} x{}-> ",
                        self.var_of(from, to, kind)
                    ));
                }
            }
        }
        if let Some(&(first, _, _)) = cycle.first() {
            out.push_str(&self.name(first));
        }
        out
    }

    /// The variable behind an edge (the first one, if several give the same edge).
    fn var_of(&self, from: u32, to: u32, kind: u8) -> u32 {
        let (a, b) = (
            &self.h.attempts[from as usize],
            &self.h.attempts[to as usize],
        );
        let found = match kind {
            WW => b
                .writes()
                .find(|&w| {
                    let base = self.base_src[w];
                    base < INITIAL_VERSION && self.owner[base as usize] == from
                })
                .map(|w| self.h.writes[w].var),
            WR => b
                .reads()
                .find(|&r| {
                    let src = self.read_src[r];
                    src < INITIAL_VERSION && self.owner[src as usize] == from
                })
                .map(|r| self.h.reads[r].var),
            _ => a
                .reads()
                .find(|&r| {
                    self.valid(self.read_src[r])
                        && self
                            .successors(self.read_src[r], self.h.reads[r].var)
                            .any(|s| s == to)
                })
                .map(|r| self.h.reads[r].var),
        };
        found.unwrap_or(u32::MAX)
    }
}

/// Real-time order in linear size: a chain of nodes, one per attempt in order of end stamps.
struct Chain {
    n: u32,
    /// The rank of each attempt's end among all ends.
    rank: Vec<u32>,
    /// For each attempt, how many attempts ended before it started.
    before: Vec<u32>,
}

impl Chain {
    fn new(attempts: &[Attempt]) -> Chain {
        let n = attempts.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| attempts[i as usize].end);
        let mut rank = vec![0; n];
        for (k, &i) in order.iter().enumerate() {
            rank[i as usize] = k as u32;
        }
        let ends: Vec<u64> = order.iter().map(|&i| attempts[i as usize].end).collect();
        let before = attempts
            .iter()
            .map(|a| ends.partition_point(|&e| e < a.start) as u32)
            .collect();
        Chain {
            n: n as u32,
            rank,
            before,
        }
    }

    fn for_each_edge(&self, mut edge: impl FnMut(u32, u32, u8)) {
        let n = self.n;
        for i in 0..n {
            edge(i, n + self.rank[i as usize], RT);
        }
        for k in 1..n {
            edge(n + k - 1, n + k, RT);
        }
        for i in 0..n {
            let before = self.before[i as usize];
            if before > 0 {
                edge(n + before - 1, i, RT);
            }
        }
    }
}

/// A directed graph in compressed sparse rows, with a kind per edge.
struct Graph {
    offsets: Vec<u32>,
    targets: Vec<u32>,
    kinds: Vec<u8>,
    counts: [usize; 4],
}

impl Graph {
    /// `edges` is called twice and must produce the same edges both times.
    fn build(nodes: usize, edges: impl Fn(&mut dyn FnMut(u32, u32, u8))) -> Graph {
        let mut offsets = vec![0u32; nodes + 1];
        let mut counts = [0usize; 4];
        edges(&mut |from, _, kind| {
            offsets[from as usize + 1] += 1;
            counts[kind.trailing_zeros() as usize] += 1;
        });
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        let total = offsets[nodes] as usize;
        let (mut targets, mut kinds) = (vec![0u32; total], vec![0u8; total]);
        // Fill each node's block using its start as the cursor; each start then ends up at the
        // next node's start, and shifting by one restores them.
        edges(&mut |from, to, kind| {
            let at = offsets[from as usize] as usize;
            offsets[from as usize] += 1;
            targets[at] = to;
            kinds[at] = kind;
        });
        offsets.copy_within(0..nodes, 1);
        offsets[0] = 0;
        Graph {
            offsets,
            targets,
            kinds,
            counts,
        }
    }

    fn edges(&self, v: u32) -> impl Iterator<Item = (u32, u8)> + '_ {
        let range = self.offsets[v as usize] as usize..self.offsets[v as usize + 1] as usize;
        range.map(|e| (self.targets[e], self.kinds[e]))
    }
}

const UNSEEN: u32 = u32::MAX;

/// Tarjan's strongly connected components, iterative, with scratch space reused across runs on
/// subgraphs (only the nodes a run touched are reset).
struct Tarjan {
    index: Vec<u32>,
    low: Vec<u32>,
    on_stack: Vec<bool>,
    stack: Vec<u32>,
    /// The depth-first path: each node with the position of its next edge to look at.
    frames: Vec<(u32, u32)>,
    touched: Vec<u32>,
    next_index: u32,
}

impl Tarjan {
    fn new(nodes: usize) -> Tarjan {
        Tarjan {
            index: vec![UNSEEN; nodes],
            low: vec![0; nodes],
            on_stack: vec![false; nodes],
            stack: Vec::new(),
            frames: Vec::new(),
            touched: Vec::new(),
            next_index: 0,
        }
    }

    /// The components with more than one node of the subgraph made of the nodes `allowed`
    /// accepts and the edges with a kind in `mask`, among those reachable from `roots`.
    fn components(
        &mut self,
        g: &Graph,
        roots: impl IntoIterator<Item = u32>,
        allowed: impl Fn(u32) -> bool,
        mask: u8,
    ) -> Vec<Vec<u32>> {
        let mut found = Vec::new();
        for root in roots {
            if self.index[root as usize] != UNSEEN || !allowed(root) {
                continue;
            }
            self.visit(g, root);
            while let Some(&(v, pos)) = self.frames.last() {
                let end = g.offsets[v as usize + 1];
                let mut pos = pos;
                let mut descend = None;
                while pos < end {
                    let (w, kind) = (g.targets[pos as usize], g.kinds[pos as usize]);
                    pos += 1;
                    if kind & mask == 0 || !allowed(w) {
                        continue;
                    }
                    if self.index[w as usize] == UNSEEN {
                        descend = Some(w);
                        break;
                    }
                    if self.on_stack[w as usize] {
                        self.low[v as usize] = self.low[v as usize].min(self.index[w as usize]);
                    }
                }
                self.frames.last_mut().expect("a frame").1 = pos;
                if let Some(w) = descend {
                    self.visit(g, w);
                    continue;
                }
                self.frames.pop();
                if self.low[v as usize] == self.index[v as usize] {
                    let mut component = Vec::new();
                    loop {
                        let w = self.stack.pop().expect("v is on the stack");
                        self.on_stack[w as usize] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        found.push(component);
                    }
                }
                if let Some(&(parent, _)) = self.frames.last() {
                    self.low[parent as usize] = self.low[parent as usize].min(self.low[v as usize]);
                }
            }
        }
        for &v in &self.touched {
            self.index[v as usize] = UNSEEN;
            self.on_stack[v as usize] = false;
        }
        self.touched.clear();
        self.next_index = 0;
        found
    }

    fn visit(&mut self, g: &Graph, v: u32) {
        self.index[v as usize] = self.next_index;
        self.low[v as usize] = self.next_index;
        self.next_index += 1;
        self.stack.push(v);
        self.on_stack[v as usize] = true;
        self.frames.push((v, g.offsets[v as usize]));
        self.touched.push(v);
    }
}

/// A shortest cycle through the first node of `nodes` (a strongly connected set) using edges
/// in `mask` between its members: breadth-first search back to the start.
fn find_cycle(g: &Graph, nodes: &[u32], mask: u8) -> Vec<(u32, u32, u8)> {
    let members: std::collections::HashSet<u32> = nodes.iter().copied().collect();
    let start = nodes[0];
    let mut parent: HashMap<u32, (u32, u8)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for (w, kind) in g.edges(v) {
            if kind & mask == 0 || !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut cycle = vec![(v, w, kind)];
                let mut at = v;
                while at != start {
                    let (p, k) = parent[&at];
                    cycle.push((p, at, k));
                    at = p;
                }
                cycle.reverse();
                return cycle;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert((v, kind));
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected set has a cycle through each member")
}
