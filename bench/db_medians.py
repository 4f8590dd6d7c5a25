#!/usr/bin/env python3
"""Prints the criterion medians of the last Redis and PostgreSQL bench runs as Markdown tables:
idem beside the `idempotent` crate and `redis-benchmark` SET (from redis_benchmark.json, which
benches/redis.rs writes), and PgStore's costs. Usage: python3 bench/db_medians.py [TARGET_DIR]
(default: $CARGO_TARGET_DIR, or bench/target)."""
import json
import os
import sys

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "bench/target")
root = os.path.join(target, "criterion")


def median_ns(*path):
    file = os.path.join(root, *path, "new", "estimates.json")
    if not os.path.exists(file):
        return None
    with open(file) as f:
        return json.load(f)["median"]["point_estimate"]


def fmt(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def rate(ns):
    return f"{1e9 / ns / 1e3:.1f} k/s" if ns else "–"


redis_benchmark = {}
rb_file = os.path.join(root, "redis_benchmark.json")
if os.path.exists(rb_file):
    with open(rb_file) as f:
        redis_benchmark = {int(k): v for k, v in json.load(f).items()}

if median_ns("redis_replay", "idem", "1") is not None:
    print("| Redis | callers | idem | idempotent (time per call vs idem) | redis-benchmark SET | idem / redis-benchmark (throughput) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for group in ["redis_replay", "redis_first_call"]:
        for callers in [1, 50]:
            idem = median_ns(group, "idem", str(callers))
            peer = median_ns(group, "idempotent", str(callers))
            rb = redis_benchmark.get(callers)
            cells = [
                f"{fmt(idem)} ({rate(idem)})",
                f"{fmt(peer)} ({rate(peer)}; {peer / idem:.2f}x idem)" if idem and peer else "–",
                f"{rb / 1e3:.1f} k/s" if rb else "–",
                f"{1e9 / idem / rb:.0%}" if idem and rb else "–",
            ]
            name = group.removeprefix("redis_").replace("_", " ")
            print(f"| {name} | {callers} | " + " | ".join(cells) + " |")
    print()

if median_ns("pg_standalone", "replay") is not None:
    print("| PostgreSQL | pool pings on acquire (sqlx default) | pool without the ping (`PgStore::connect`) |")
    print("| --- | --- | --- |")
    for name in ["replay", "first_call", "select_1"]:
        print(f"| standalone {name} | {fmt(median_ns('pg_standalone', name))} | {fmt(median_ns('pg_standalone', name + '_no_ping'))} |")
    bare = median_ns("pg_transaction", "insert")
    idem = median_ns("pg_transaction", "insert_idem")
    print(f"| transaction: INSERT + COMMIT | {fmt(bare)} | |")
    print(f"| transaction: INSERT + COMMIT in `#[idempotent(transaction = tx)]` | {fmt(idem)} | |")
    if bare and idem:
        print(f"| added by the transactional mode | {fmt(idem - bare)} ({idem / bare - 1:+.0%}) | |")
