#!/usr/bin/env python3
"""What a tenant of N devices x D days costs, measured on scaled-down lakes and
extrapolated (docs/scale.md).

For each lake (generated when missing) it measures the size on disk per table and the
median time of a few whole `mdesnap query` commands: a latest-snapshot aggregate, a
filtered count over the whole history, the daily trend, a point lookup across history,
and the last 30 days' trend (pruned to 30 snapshots by the `snapshot` filter). Then it
scales each figure to the target: sizes and whole-history queries by machine rows,
latest-snapshot queries by machines, 30-day queries by machines.

Usage: cargo build --release && python3 benches/scale.py
       [--lake MACHINESxDAYS ...] [--runs 3] [--target 1000000x1095]
"""

import argparse
import os
import statistics
import subprocess
import time

BIN = "target/release/mdesnap"

QUERIES = [
    (
        "latest: counts per health status",
        "latest",
        "SELECT health_status, count(*) FROM machines GROUP BY 1 ORDER BY 1",
    ),
    (
        "history: filtered count",
        "history",
        "SELECT count(*) FROM machines_history WHERE risk_score = 'High' AND os_platform = 'Windows11'",
    ),
    (
        "history: daily trend",
        "history",
        "SELECT date_trunc('day', snapshot) AS day, health_status, count(*) FROM machines_history GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "history: point lookup by name",
        "history",
        "SELECT snapshot, id, health_status FROM machines_history WHERE computer_dns_name = 'nonexistent.contoso.com' ORDER BY 1",
    ),
    (
        "last 30 days: daily trend",
        "window",
        # A literal bound, as a script or dashboard would send it: the catalog prunes
        # whole snapshots on it before any file is opened.
        "SELECT date_trunc('day', snapshot) AS day, count(*) FROM machines_history WHERE snapshot > TIMESTAMP '{latest}' - INTERVAL '30 days' GROUP BY 1 ORDER BY 1",
    ),
]


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def timed(args, runs):
    subprocess.run(args, check=True, capture_output=True)  # warm-up
    times = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.monotonic() - t)
    return statistics.median(times)


def parse(spec):
    machines, days = spec.lower().split("x")
    return int(machines), int(days)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", action="append", default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--target", default="1000000x1095")
    parser.add_argument("--dir", default="/tmp")
    args = parser.parse_args()
    specs = args.lake or ["10000x365", "100000x30"]
    target_m, target_d = parse(args.target)
    for spec in specs:
        machines, days = parse(spec)
        lake = os.path.join(args.dir, f"mdesnap-scale-{machines}x{days}")
        if not os.path.isdir(os.path.join(lake, "_snapshots")):
            t = time.monotonic()
            subprocess.run(
                [BIN, "generate", "--lake", lake, "--machines", str(machines),
                 "--days", str(days), "--seed", "1", "--quiet"],
                check=True,
            )
            print(f"generated {spec} in {time.monotonic() - t:.0f} s")
        rows = machines * days
        scale_rows = target_m * target_d / rows
        scale_machines = target_m / machines
        print(f"\n## {machines:,} machines x {days} days ({rows / 1e6:.2f} M machine rows)")
        print(f"extrapolated to {target_m:,} x {target_d}: x{scale_rows:,.0f} rows, x{scale_machines:,.0f} machines\n")
        print("| table | MB here | GB at target |")
        print("|---|---|---|")
        total = 0
        for table in sorted(os.listdir(lake)):
            path = os.path.join(lake, table)
            if not os.path.isdir(path):
                continue
            size = du(path)
            total += size
            print(f"| {table} | {size / 1e6:,.1f} | {size * scale_rows / 1e9:,.1f} |")
        print(f"| **all** | {total / 1e6:,.1f} | {total * scale_rows / 1e9:,.1f} |")
        print("\n| query | median s here | s at target |")
        print("|---|---|---|")
        base = timed([BIN, "query", "--lake", lake, "--format", "csv", "SELECT 1"], args.runs)
        latest = subprocess.run(
            [BIN, "query", "--lake", lake, "--format", "csv",
             "SELECT arrow_cast(max(snapshot), 'Utf8') FROM snapshots"],
            check=True, capture_output=True, text=True,
        ).stdout.splitlines()[1]
        for name, kind, sql in QUERIES:
            sql = sql.replace("{latest}", latest)
            t = timed([BIN, "query", "--lake", lake, "--format", "csv", sql], args.runs)
            factor = scale_rows if kind == "history" else scale_machines
            work = max(t - base, 0.0)
            print(f"| {name} | {t:.3f} | {base + work * factor:,.1f} |")
        print(f"\n(`SELECT 1`, the fixed cost of a command here: {base:.3f} s)")


if __name__ == "__main__":
    main()
