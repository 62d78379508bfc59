#!/usr/bin/env python3
"""mdesnap against DuckDB on the same Parquet files: the query suite of benches/queries.

Each query is `NN_name.sql` (DataFusion's SQL, what mdesnap runs), with
`NN_name.duckdb.sql` where DuckDB needs other spelling (the Hive `snapshot` column is
text there) and `NN_name.odata` where the question has an OData twin.

Method (docs/benchmarks.md, "The query suite against DuckDB"):
- mdesnap: the whole `mdesnap query --format csv` command, minus the same command's
  `SELECT 1`; median of RUNS after one warm-up run. The SELECT 1, the query and DuckDB's
  run take turns within each round, so that all three meet the same load.
- DuckDB: in process, `SET threads=2`, UTC; `machines` (and every table) as
  `read_parquet` of the latest partition folder, `*_history` as `read_parquet` of all
  partitions with `hive_partitioning=true`; median of RUNS after a warm-up.
- Rows: mdesnap's CSV and DuckDB's rows, both as text, must agree in order; an OData
  twin must give as many rows as its SQL.

Setup: pip install duckdb==2.0.1; cargo build --release.

    python3 benches/compare_duckdb.py                  # 100,000 machines x 30 days
    python3 benches/compare_duckdb.py --machines 10000 --days 7 --runs 3
    python3 benches/compare_duckdb.py --only 10        # queries whose name has "10"
    python3 benches/compare_duckdb.py --warm           # and both engines warm, in process

With --warm it then times the suite again with both engines warm in one process each:
mdesnap as one `mdesnap repl` reading the statements from a pipe, a statement timed from
sending it to reading the CSV of a marker statement sent after it, minus the same for
`SELECT 1`. The figures of the issue's method are the first table's.

The lake is generated into --lake (default /tmp/mdesnap-compare-lake) and generated
again when the binary or the flags changed (a stamp file remembers). With
--history-lake it also times the 1,000-snapshot lake (200 machines each): opening it
with `count(*)`, and a filtered count over `machines_history` against DuckDB.
"""

import argparse
import csv
import glob
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MDESNAP", os.path.join(ROOT, "target", "release", "mdesnap"))
QUERIES = os.path.join(ROOT, "benches", "queries")
TABLES = ["machines", "ip_addresses", "security_states", "user_machines", "domain_machines"]


def generate(lake, machines, days, seed=1):
    """Generates the lake unless it is there from the same binary and flags."""
    stamp = os.path.join(lake, ".compare-stamp")
    want = {"bin_mtime": os.path.getmtime(BIN), "machines": machines, "days": days, "seed": seed}
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == want:
                return False
    shutil.rmtree(lake, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([BIN, "generate", "--lake", lake, "--machines", str(machines),
                    "--days", str(days), "--seed", str(seed), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"generated {machines} machines x {days} days into {lake} "
          f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    with open(stamp, "w") as f:
        json.dump(want, f)
    return True


def mdesnap(lake, statement):
    """Runs one statement; returns (seconds, csv rows without the header)."""
    t = time.perf_counter()
    out = subprocess.run([BIN, "query", "--lake", lake, "--format", "csv", statement],
                         capture_output=True, text=True)
    took = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"mdesnap failed on {statement!r}: {out.stderr.strip()}")
    rows = list(csv.reader(io.StringIO(out.stdout)))
    return took, rows[1:]


def median_time(fn, runs):
    fn()  # warm-up
    return statistics.median(fn()[0] for _ in range(runs))


def duck(lake):
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads=2")
    con.execute("SET TimeZone='UTC'")
    latest = sorted(os.path.basename(p) for p in glob.glob(os.path.join(lake, "machines", "snapshot=*")))[-1]
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/{latest}/*.parquet')")
        con.execute(f"CREATE VIEW {t}_history AS SELECT * FROM read_parquet("
                    f"'{lake}/{t}/*/*.parquet', hive_partitioning=true)")
    return con


def text(v):
    """A DuckDB value as mdesnap's CSV writes it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def duck_run(con, sql):
    t = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return time.perf_counter() - t, [[text(v) for v in r] for r in rows]


def suite(only, folder=QUERIES):
    names = sorted({f.split(".")[0] for f in os.listdir(folder)
                    if os.path.isfile(os.path.join(folder, f))})
    for name in names:
        if only and only not in name:
            continue
        read = lambda ext: (open(os.path.join(folder, name + ext)).read()
                            if os.path.exists(os.path.join(folder, name + ext)) else None)
        sql = read(".sql")
        yield name, sql, read(".duckdb.sql") or sql, read(".odata")


def strip_comments(sql):
    return "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--")).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "mdesnap-compare-lake"))
    ap.add_argument("--machines", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--history-lake", action="store_true",
                    help="also the 1,000-snapshot lake of 200 machines")
    ap.add_argument("--warm", action="store_true",
                    help="also the suite with mdesnap warm in one console process")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"no {BIN}: run cargo build --release first")
    import duckdb
    generate(args.lake, args.machines, args.days)
    base = median_time(lambda: mdesnap(args.lake, "SELECT 1"), args.runs)
    con = duck(args.lake)
    print(f"mdesnap {BIN}; DuckDB {duckdb.__version__}, threads=2; lake {args.machines} machines x "
          f"{args.days} days; medians of {args.runs} after a warm-up; "
          f"mdesnap times minus its SELECT 1 ({base * 1000:.0f} ms at the start), "
          f"taking turns with it and DuckDB in each round")
    print(f"{'query':28} {'mdesnap ms':>10} {'duckdb ms':>10} {'ratio':>7}  rows")
    ratios, bad = [], []
    for name, sql, dsql, odata in suite(args.only):
        ours, theirs, our_rows, agree = side_by_side(args, con, base, sql, dsql)
        if not agree:
            bad.append(name)
        ratio = max(ours, 1e-4) / max(theirs, 1e-4)
        ratios.append(ratio)
        print(f"{name:28} {ours * 1000:10.1f} {theirs * 1000:10.1f} {ratio:7.2f}  "
              f"{len(our_rows)} {'agree' if agree else 'DIFFER'}")
        if odata:
            odata = odata.strip()
            one, o = interleaved([lambda: mdesnap(args.lake, "SELECT 1"),
                                  lambda: mdesnap(args.lake, odata)], args.runs)
            o -= one
            _, o_rows = mdesnap(args.lake, odata)
            same = len(o_rows) == len(our_rows)
            if not same:
                bad.append(name + " (odata)")
            r = max(o, 1e-4) / max(theirs, 1e-4)
            ratios.append(r)
            print(f"{'  OData twin':28} {o * 1000:10.1f} {theirs * 1000:10.1f} {r:7.2f}  "
                  f"{len(o_rows)} {'same count' if same else 'DIFFER'}")
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"geometric mean of the ratios: {geo:.2f}; worst {max(ratios):.2f}; "
              f"{sum(r > 1.0 for r in ratios)} of {len(ratios)} above 1.0")
    bad += changes_suite(args, con, base)
    if args.warm:
        warm_suite(args, con)
    if args.history_lake:
        history_lake(args)
    if bad:
        sys.exit(f"rows differ: {', '.join(bad)}")


def interleaved(fns, runs):
    """Medians of each of `fns` over `runs` rounds after a warm-up round, the functions
    taking turns within a round: a shared machine's load changes over minutes, and each
    figure then meets the same load as the ones it is compared or offset with."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            t.append(fn()[0])
    return [statistics.median(t) for t in times]


def side_by_side(args, con, base, sql, dsql):
    """Both medians (mdesnap's minus its SELECT 1, run in the same rounds), mdesnap's
    rows, and whether DuckDB's agree. `base` is unused: kept for the callers' shape."""
    sql, dsql = strip_comments(sql), strip_comments(dsql)
    one, ours, theirs = interleaved([lambda: mdesnap(args.lake, "SELECT 1"),
                                     lambda: mdesnap(args.lake, sql),
                                     lambda: duck_run(con, dsql)], args.runs)
    _, our_rows = mdesnap(args.lake, sql)
    _, their_rows = duck_run(con, dsql)
    return ours - one, theirs, our_rows, our_rows == their_rows


class Console:
    """One `mdesnap repl` over the lake, statements written to its standard input. A
    statement's time runs from sending it to reading the CSV of a marker statement
    sent after it; the rows are not kept (the first table checks them)."""

    MARK = "end-of-statement-5c1e"

    def __init__(self, lake):
        # Its warnings go to a file: a pipe nobody reads could fill and stop it.
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([BIN, "repl", "--lake", lake], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors,
                                     text=True, bufsize=1)
        self.run("\\format csv")

    def run(self, statement):
        t = time.perf_counter()
        self.proc.stdin.write(f"{statement}\nSELECT '{self.MARK}' AS mark;\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.errors.seek(0)
                raise RuntimeError(f"the console stopped at {statement!r}: "
                                   f"{self.errors.read().strip()}")
            if line.strip() == self.MARK:
                return time.perf_counter() - t, None

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def warm_suite(args, con):
    """The suite again, both engines warm: mdesnap in one console process (its statement
    minus its `SELECT 1`, each with the marker), DuckDB in process, taking turns."""
    console = Console(args.lake)
    print(f"warm, in process: {'query':17} {'mdesnap ms':>10} {'duckdb ms':>10} {'ratio':>7}")
    ratios = []
    for name, sql, dsql, odata in suite(args.only):
        dsql = strip_comments(dsql)
        statements = [(name, strip_comments(sql).rstrip(";") + ";")]
        if odata:
            statements.append(("  OData twin", odata.strip()))
        for label, statement in statements:
            one, ours, theirs = interleaved([lambda: console.run("SELECT 1;"),
                                             lambda: console.run(statement),
                                             lambda: duck_run(con, dsql)], args.runs)
            ours -= one
            ratio = max(ours, 1e-4) / max(theirs, 1e-4)
            ratios.append(ratio)
            print(f"{label:35} {ours * 1000:10.1f} {theirs * 1000:10.1f} {ratio:7.2f}")
    console.close()
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"warm geometric mean of the ratios: {geo:.2f}; worst {max(ratios):.2f}; "
              f"{sum(r > 1.0 for r in ratios)} of {len(ratios)} above 1.0")


def changes_suite(args, con, base):
    """The questions of benches/queries/changes: mdesnap reads its stored
    machine_changes, DuckDB asks machines_history with lag(). Not in the geometric
    mean above: the speed-up here is the point of storing the changes."""
    folder = os.path.join(QUERIES, "changes")
    bad = []
    print(f"{'changes (stored vs lag())':28} {'mdesnap ms':>10} {'duckdb ms':>10} {'speed-up':>8}  rows")
    for name, sql, dsql, _ in suite(args.only, folder):
        ours, theirs, our_rows, agree = side_by_side(args, con, base, sql, dsql)
        if not agree:
            bad.append(name)
        print(f"{name:28} {ours * 1000:10.1f} {theirs * 1000:10.1f} "
              f"{max(theirs, 1e-4) / max(ours, 1e-4):7.1f}x  "
              f"{len(our_rows)} {'agree' if agree else 'DIFFER'}")
    return bad


def history_lake(args):
    lake = args.lake + "-1000"
    generate(lake, 200, 1000)
    con = duck(lake)
    runs = args.runs
    t_open = median_time(lambda: mdesnap(lake, "SELECT count(*) FROM machines"), runs)
    base = median_time(lambda: mdesnap(lake, "SELECT 1"), runs)
    sql = "SELECT count(*) AS n FROM machines_history WHERE risk_score = 'High'"
    ours = median_time(lambda: mdesnap(lake, sql), runs) - base
    theirs = median_time(lambda: duck_run(con, sql), runs)
    agree = mdesnap(lake, sql)[1] == duck_run(con, sql)[1]
    print(f"1,000 snapshots x 200 machines: open + count(*) {t_open * 1000:.0f} ms (whole command); "
          f"filtered history count mdesnap {ours * 1000:.1f} ms, DuckDB {theirs * 1000:.1f} ms, "
          f"ratio {ours / theirs:.2f}, rows {'agree' if agree else 'DIFFER'}")


if __name__ == "__main__":
    main()
