#!/usr/bin/env python3
"""Turn criterion's output into the plots and tables of docs/benchmarks.md.

Usage:
    python3 scripts/plot_benchmarks.py CRITERION_DIR [--img docs/img] [--report docs/benchmarks.md]
        [--log bench-output.txt]

CRITERION_DIR is criterion's output directory (`target/criterion`, or `$CARGO_TARGET_DIR/criterion`).
For every benchmark it reads `<group>/<function>/new/estimates.json` (criterion 0.5) and takes
the median time of one iteration. The bench files time one operation of all threads together,
so 1e9 / median is the throughput in operations per second.

Writes:
- `<img>/bank.svg` and `<img>/intset_<u>pct_<structure>.svg`: throughput against threads;
- with --report, the tables between `<!-- tables:begin -->` and `<!-- tables:end -->` of the
  report: for each group the median of every function and its ratio to mvstm's;
- with --log (the captured stdout of `cargo bench`), the printed consistency and re-execution
  figures as one more table.

Standard library only (no matplotlib): the SVG is written by hand.
"""

import argparse
import json
import math
import os
import re
import sys

THREADS = [1, 2, 4, 8]

# Series colours and dash patterns: STMs solid, locks dashed.
STYLE = {
    "mvstm": ("#d62728", ""),
    "fast-stm": ("#1f77b4", ""),
    "async-stm": ("#2ca02c", ""),
    "stm": ("#9467bd", ""),
    "mvstm_tmap": ("#ff7f0e", ""),
    "mutex_per_account": ("#555555", "6,3"),
    "mutex_coarse": ("#8c564b", "6,3"),
    "rwlock_coarse": ("#e377c2", "6,3"),
    "mutex_btreeset": ("#8c564b", "6,3"),
    "rwlock_btreeset": ("#e377c2", "6,3"),
    "mutex_hashset": ("#555555", "6,3"),
    "mutex_per_bucket": ("#17becf", "6,3"),
}


def load(criterion_dir):
    """{group: {function: median_ns}} for every benchmark criterion has a result for."""
    results = {}
    for root, _dirs, files in os.walk(criterion_dir):
        if os.path.basename(root) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            ids = json.load(f)
        with open(os.path.join(root, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        results.setdefault(ids["group_id"], {})[ids["function_id"]] = median
    return results


def series_key(function):
    """The style of a function: `fast-stm_skiplist` is drawn as `fast-stm`."""
    for suffix in ("_skiplist", "_hashset"):
        if function.endswith(suffix) and function[: -len(suffix)] in STYLE:
            return function[: -len(suffix)]
    return function


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def fmt_rate(ops):
    if ops >= 1e6:
        return f"{ops / 1e6:.2f} M/s"
    if ops >= 1e3:
        return f"{ops / 1e3:.1f} k/s"
    return f"{ops:.0f} /s"


def svg_plot(title, series, path):
    """series: [(function, {threads: ops_per_s})]; a log-scale throughput plot."""
    width, height = 760, 420
    left, right, top, bottom = 70, 210, 40, 50
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, pts in series for v in pts.values() if v > 0]
    if not values:
        return False
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi == lo:
        hi = lo * 10

    def x(t):
        return left + pw * THREADS.index(t) / (len(THREADS) - 1)

    def y(v):
        return top + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
    ]
    # Grid and axes: one line per decade, one per thread count.
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{fmt_rate(decade)}</text>'
        )
        for k in range(2, 10):
            v = decade * k
            if v < hi:
                yy = y(v)
                out.append(
                    f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" '
                    f'stroke="#f2f2f2"/>'
                )
        decade *= 10
    for t in THREADS:
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle">{t}</text>')
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">'
        f"threads (2 cores: 4 and 8 oversubscribe)</text>"
    )
    out.append(
        f'<text x="16" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + ph / 2})">operations per second (log)</text>'
    )
    out.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
    )
    for i, (function, pts) in enumerate(series):
        colour, dash = STYLE.get(series_key(function), ("#000000", "2,2"))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        width_attr = 3 if series_key(function) == "mvstm" else 1.8
        coords = [(x(t), y(pts[t])) for t in THREADS if pts.get(t, 0) > 0]
        if len(coords) > 1:
            d = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
            out.append(
                f'<polyline points="{d}" fill="none" stroke="{colour}" '
                f'stroke-width="{width_attr}"{dash_attr}/>'
            )
        for a, b in coords:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>')
        ly = top + 10 + 18 * i
        lx = left + pw + 14
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 26}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="{width_attr}"{dash_attr}/>'
        )
        out.append(f'<text x="{lx + 32}" y="{ly + 4}">{function}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def threads_series(results, pattern, functions):
    """[(function, {threads: ops/s})] for groups matching `pattern` with a `{n}` placeholder."""
    series = []
    for function in functions:
        pts = {}
        for t in THREADS:
            median = results.get(pattern.format(n=t), {}).get(function)
            if median:
                pts[t] = 1e9 / median
        if pts:
            series.append((function, pts))
    return series


def functions_of(results, prefix):
    """Functions of the groups starting with `prefix`, in the order first seen at 1 thread."""
    seen = []
    for t in THREADS:
        for group, fns in results.items():
            if group.startswith(prefix) and group.endswith(f"_threads_{t}"):
                for fn in sorted(fns, key=order_key):
                    if fn not in seen and not fn.startswith("sequential"):
                        seen.append(fn)
    return seen


ORDER = ["mvstm", "fast-stm", "async-stm", "stm"]


def order_key(function):
    """STMs first (mvstm leading), then the rest by name."""
    base = series_key(function)
    if base in ORDER:
        return (0, function.endswith("_hashset"), ORDER.index(base), function)
    if function == "mvstm_tmap":
        return (0, True, 9, function)
    return (1, False, 0, function)


def plots(results, img):
    os.makedirs(img, exist_ok=True)
    written = []
    bank = threads_series(results, "bank_threads_{n}", functions_of(results, "bank_threads_"))
    if svg_plot("bank: 1,024 accounts, 20% read-all", bank, os.path.join(img, "bank.svg")):
        written.append("bank.svg")
    for u in (0, 20, 50):
        fns = functions_of(results, f"intset_{u}pct_threads_")
        skip = [f for f in fns if "skiplist" in f or "btreeset" in f]
        hashed = [f for f in fns if f not in skip]
        for name, chosen in (("skiplist", skip), ("hashset", hashed)):
            title = f"intset {u}% updates: {name} (256 of 512 keys)"
            path = os.path.join(img, f"intset_{u}pct_{name}.svg")
            if svg_plot(title, threads_series(results, f"intset_{u}pct_threads_{{n}}", chosen), path):
                written.append(os.path.basename(path))
    return written


def group_sort_key(group):
    """Micro groups first, then by workload, update rate and thread count."""
    m = re.match(r"(.*?)(?:_(\d+)pct)?_threads_(\d+)$", group)
    if m:
        return (1, m.group(1), int(m.group(2) or 0), int(m.group(3)))
    return (0, group, 0, 0)


def references(group, fns):
    """The mvstm functions a group's times are divided by, as (column title, function)."""
    if group == "hooks":
        return []
    if group.startswith("intset_"):
        return [(f"/ {f}", f) for f in ("mvstm_skiplist", "mvstm_hashset") if f in fns]
    for f in ("mvstm", "tqueue", "tmap"):
        if f in fns:
            return [(f"/ {f}", f)]
    return []


def tables(results, skip=("track_",)):
    """Markdown: per group, each function's median, throughput and time ratios to mvstm."""
    lines = []
    for group in sorted(results, key=group_sort_key):
        if group.startswith(skip):
            continue
        fns = results[group]
        refs = references(group, fns)
        threaded = "_threads_" in group or group == "pingpong"
        hooks = group == "hooks"
        cols = ["function", "median"]
        cols += ["throughput"] if threaded else []
        cols += ["added by the hook"] if hooks else []
        cols += [title for title, _ in refs]
        lines += [f"#### `{group}`", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        for fn in sorted(fns, key=order_key):
            median = fns[fn]
            row = [fn, fmt_time(median)]
            if threaded:
                row.append(fmt_rate(1e9 / median))
            if hooks:
                base = fns.get(fn.split("_")[0] + "_no_hook")
                row.append(f"{median - base:+.1f} ns" if base and not fn.endswith("no_hook") else "")
            row += [f"{median / fns[ref]:.2f}" for _, ref in refs]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def log_table(log_path):
    """The figures the benches print: consistency of bank read-alls, reader re-executions."""
    rows = []
    with open(log_path, errors="replace") as f:
        for line in f:
            line = line.strip()
            m = re.match(r"^(readers_1000/\S+): (\d+) reader transactions, ([\d.]+) executions "
                         r"per reader transaction, ([\d.]+) writer commits per reader "
                         r"transaction, (\d+) wrong sums$", line)
            if m:
                rows.append(("readers", m.groups()))
                continue
            m = re.match(r"^(bank_threads_\d+/\S+): (\d+) read-alls, (\d+) wrong totals, (\d+) "
                         r"attempts saw a torn total$", line)
            if m:
                rows.append(("bank", m.groups()))
    out = []
    readers = [r for kind, r in rows if kind == "readers"]
    if readers:
        out += [
            "| reader | transactions | executions per transaction | writer commits per "
            "reader transaction | wrong sums |",
            "|---|---|---|---|---|",
        ]
        out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in readers]
        out.append("")
    bank = [r for kind, r in rows if kind == "bank"]
    if bank:
        out += [
            "| bank function | read-alls | wrong totals | attempts that saw a torn total |",
            "|---|---|---|---|",
        ]
        out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in bank]
        out.append("")
    return "\n".join(out)


def splice(report, begin, end, text):
    with open(report) as f:
        doc = f.read()
    b, e = doc.find(begin), doc.find(end)
    if b < 0 or e < 0:
        sys.exit(f"{report}: markers {begin} / {end} not found")
    doc = doc[: b + len(begin)] + "\n" + text + "\n" + doc[e:]
    with open(report, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("criterion_dir")
    ap.add_argument("--img", default="docs/img")
    ap.add_argument("--report", help="splice the tables into this markdown file")
    ap.add_argument("--log", help="captured stdout of cargo bench, for the printed figures")
    args = ap.parse_args()
    results = load(args.criterion_dir)
    if not results:
        sys.exit(f"no criterion results under {args.criterion_dir}")
    for name in plots(results, args.img):
        print(f"wrote {os.path.join(args.img, name)}")
    text = tables(results)
    if args.report:
        splice(args.report, "<!-- tables:begin -->", "<!-- tables:end -->", text)
        if args.log:
            splice(args.report, "<!-- printed:begin -->", "<!-- printed:end -->",
                   log_table(args.log))
        print(f"updated {args.report}")
    else:
        print(text)
        if args.log:
            print(log_table(args.log))


if __name__ == "__main__":
    main()
