#!/usr/bin/env python3
"""Prints the criterion medians of the last `cargo bench` run as a Markdown table, with each
peer's ratio to idem. Usage: python3 bench/medians.py [TARGET_DIR] (default: bench/target, or
$CARGO_TARGET_DIR)."""
import json
import os
import sys

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "bench/target")
root = os.path.join(target, "criterion")
groups = ["replay", "first_call", "contention", "coalescing"]
order = ["idem", "idem-lazy", "cached", "idempotent", "moka", "bare"]


def median_ns(group, name):
    path = os.path.join(root, group, name, "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


print("| bench | " + " | ".join(order) + " |")
print("| --- |" + " --- |" * len(order))
for group in groups:
    medians = {name: median_ns(group, name) for name in order}
    idem = medians["idem"]
    cells = []
    for name in order:
        ns = medians[name]
        if ns is None:
            cells.append("–")
        elif group == "contention":
            cells.append(f"{1e3 / ns:.2f} M calls/s" + ("" if name == "idem" else f" ({idem / ns:.2f}x idem)"))
        else:
            cells.append(fmt(ns) + ("" if name == "idem" or not idem else f" ({ns / idem:.2f}x idem)"))
    print(f"| {group} | " + " | ".join(cells) + " |")
