#!/usr/bin/env python3
"""Ingest benchmark: the release build end to end against the emulator, and the
decode-and-write part alone against DuckDB.

1. End to end: `mdesnap emulate` serves MACHINES machines in its own process, limits
   lifted; `mdesnap ingest` takes a snapshot of it RUNS times (a new lake each time).
   Reported: the median wall time of the whole ingest process, machines per second,
   and its peak RSS (from wait4's rusage). With --rss-only-at N, one more run at N
   machines for the memory figure alone.
2. Decode and write alone: `cargo bench --bench ingest` measures 100,000 machines from
   saved API pages to a committed snapshot (criterion's median), and writes the same
   machines as NDJSON; DuckDB (threads=2) turns that NDJSON into zstd Parquet, median
   of RUNS. Reported: both rates and their ratio.

    cargo build --release && python3 benches/ingest.py
    python3 benches/ingest.py --machines 200000 --rss-only-at 1000000
    python3 benches/ingest.py --skip-duckdb

DuckDB is the PyPI package, version pinned in docs/benchmarks.md:
    pip install duckdb==2.0.1
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MDESNAP", os.path.join(ROOT, "target", "release", "mdesnap"))
CREDENTIALS = {
    "AZURE_TENANT_ID": "emulator-tenant",
    "AZURE_CLIENT_ID": "emulator-client",
    "AZURE_CLIENT_SECRET": "emulator-secret",
}
UNLIMITED = "1000000000"


def emulator(machines):
    """Starts `mdesnap emulate` with the limits lifted; returns (process, url)."""
    p = subprocess.Popen(
        [BIN, "emulate", "--bind", "127.0.0.1:0", "--machines", str(machines),
         "--calls-per-minute", UNLIMITED, "--calls-per-hour", UNLIMITED],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on "):
        p.kill()
        sys.exit(f"the emulator did not start: {line!r}")
    return p, line.split()[-1]


def measured(url, lake):
    """Runs one ingest in a child Python that wait4s it, for an exact peak RSS."""
    code = (
        "import os,sys,json,subprocess,time;"
        "env=dict(os.environ);"
        "t=time.perf_counter();"
        f"p=subprocess.Popen(sys.argv[1:],stdout=subprocess.PIPE,stderr=subprocess.PIPE,env=env);"
        "o=p.stdout.read();e=p.stderr.read();"
        "pid,st,ru=os.wait4(p.pid,0);"
        "print(json.dumps({'s':time.perf_counter()-t,'rss_kib':ru.ru_maxrss,'status':st,"
        "'out':o.decode(),'err':e.decode()}))"
    )
    env = dict(os.environ, **CREDENTIALS)
    env.pop("MDESNAP_LAKE", None)
    r = subprocess.run(
        [sys.executable, "-c", code, BIN, "ingest", "--lake", lake, "--base-url", url,
         "--authority-url", url, "--quiet", "--json",
         "--calls-per-minute", UNLIMITED, "--calls-per-hour", UNLIMITED],
        capture_output=True, text=True, env=env, check=True)
    v = json.loads(r.stdout)
    if v["status"] != 0:
        sys.exit(f"ingest failed: {v['err']}")
    return v["s"], v["rss_kib"] / 1024, json.loads(v["out"])


def end_to_end(machines, runs):
    emu, url = emulator(machines)
    try:
        rows = []
        for i in range(runs):
            lake = tempfile.mkdtemp(prefix="mdesnap-ingest-bench-")
            try:
                seconds, rss, report = measured(url, lake)
            finally:
                shutil.rmtree(lake, ignore_errors=True)
            got = report["tables"]["machines"]
            if got != machines:
                sys.exit(f"run {i}: {got} machines ingested, expected {machines}")
            rows.append((seconds, rss, report["calls"]))
            print(f"  run {i + 1}: {seconds:.2f} s, peak RSS {rss:.0f} MiB, {report['calls']} calls")
        med = statistics.median(s for s, _, _ in rows)
        peak = max(r for _, r, _ in rows)
        print(f"end to end, {machines} machines: median {med:.2f} s = "
              f"{machines / med:,.0f} machines/s; peak RSS {peak:.0f} MiB")
        return med, peak
    finally:
        emu.kill()
        emu.wait()


def criterion_median_ns(pattern):
    paths = glob.glob(os.path.join(ROOT, "target", "criterion", "ingest", pattern,
                                   "new", "estimates.json"))
    if not paths:
        return None
    with open(paths[0]) as f:
        return json.load(f)["median"]["point_estimate"]


def decode_write_vs_duckdb(runs):
    subprocess.run(["cargo", "bench", "--bench", "ingest", "--", "decode_write"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    ns = criterion_median_ns("decode_write*")
    if ns is None:
        sys.exit("no criterion estimate for decode_write")
    ours = 100_000 / (ns / 1e9)
    import duckdb  # noqa: E402  (only this part needs it)
    ndjson = os.path.join(ROOT, "target", "bench-data", "machines-100k.ndjson")
    out = tempfile.mkdtemp(prefix="mdesnap-duckdb-")
    times = []
    try:
        for i in range(runs + 1):
            con = duckdb.connect()
            con.execute("SET threads=2")
            target = os.path.join(out, f"m{i}.parquet")
            t = time.perf_counter()
            con.execute(
                f"COPY (SELECT * FROM read_json('{ndjson}', format='newline_delimited')) "
                f"TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
            if i > 0:  # the first run warms the file cache
                times.append(time.perf_counter() - t)
            con.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    theirs = 100_000 / statistics.median(times)
    print(f"decode + write 100,000 machines: mdesnap {ours:,.0f} machines/s "
          f"(criterion median {ns / 1e6:.0f} ms), DuckDB {duckdb.__version__} "
          f"{theirs:,.0f} machines/s (median {statistics.median(times) * 1000:.0f} ms); "
          f"ratio {ours / theirs:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rss-only-at", type=int, default=0,
                    help="one more run at this many machines, for peak RSS")
    ap.add_argument("--skip-duckdb", action="store_true")
    args = ap.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no {BIN}: run cargo build --release first")
    end_to_end(args.machines, args.runs)
    if args.rss_only_at:
        end_to_end(args.rss_only_at, 1)
    if not args.skip_duckdb:
        decode_write_vs_duckdb(args.runs)


if __name__ == "__main__":
    main()
