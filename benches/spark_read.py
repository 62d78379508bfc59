#!/usr/bin/env python3
"""Reads an mdesnap lake with Apache Spark (PySpark from PyPI), the two ways
docs/scale.md describes, and checks both against mdesnap's own answer.

1. A glob of the Hive folders: `spark.read.parquet(LAKE/machines)` discovers the
   `snapshot=` partition column by itself.
2. Committed snapshots only: the file lists of `_snapshots/*.json`, which is what
   mdesnap reads (a glob also sees the files of a write in progress).

Usage: pip install pyspark==4.3.0   (needs Java 17 or later)
       python3 benches/spark_read.py [--lake DIR] [--mdesnap target/release/mdesnap]
"""

import argparse
import glob
import json
import os
import subprocess
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default="sample-data")
    parser.add_argument("--mdesnap", default="target/release/mdesnap")
    args = parser.parse_args()
    lake = os.path.abspath(args.lake)

    started = time.monotonic()
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("mdesnap-lake")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.monotonic() - started

    # 1. The glob: every snapshot folder, `snapshot` as a partition column (text:
    #    Spark infers no timestamp from 20261123T070000Z).
    t = time.monotonic()
    machines = spark.read.parquet(os.path.join(lake, "machines"))
    by_glob = {
        r["snapshot"]: r["n"]
        for r in machines.groupBy("snapshot").count().withColumnRenamed("count", "n").collect()
    }
    glob_s = time.monotonic() - t

    # 2. Committed snapshots only, from the manifests.
    t = time.monotonic()
    files, expected = [], {}
    for path in sorted(glob.glob(os.path.join(lake, "_snapshots", "*.json"))):
        with open(path) as f:
            manifest = json.load(f)
        entry = manifest["tables"].get("machines")
        if entry is None:
            continue
        expected[manifest["id"]] = entry["rows"]
        files += [os.path.join(lake, e["path"]) for e in entry["files"]]
    committed = spark.read.option("basePath", os.path.join(lake, "machines")).parquet(*files)
    by_manifest = {
        r["snapshot"]: r["n"]
        for r in committed.groupBy("snapshot").count().withColumnRenamed("count", "n").collect()
    }
    manifest_s = time.monotonic() - t

    # mdesnap's answer over the same lake.
    out = subprocess.run(
        [
            args.mdesnap,
            "query",
            "--lake",
            lake,
            "--format",
            "csv",
            "SELECT snapshot, count(*) AS n FROM machines_history GROUP BY 1 ORDER BY 1",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[1:]
    ours = len(out)
    spark.stop()

    assert by_manifest == expected, (by_manifest, expected)
    assert by_glob == expected, "a glob between writes sees the committed snapshots"
    assert ours == len(expected)
    rows = sum(expected.values())
    print(f"lake {lake}: {len(expected)} snapshots, {rows} machine rows")
    print(f"Spark session start: {session_s:.1f} s")
    print(f"glob of machines/ (partition discovery), count per snapshot: {glob_s:.2f} s")
    print(f"manifest file lists, count per snapshot: {manifest_s:.2f} s")
    print("both agree with the manifests' row counts and with mdesnap")


if __name__ == "__main__":
    main()
