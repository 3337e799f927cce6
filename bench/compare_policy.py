#!/usr/bin/env python3
"""Times the reference DeepSeek EPLB (Python + PyTorch) on the loads and shapes
of bench/policy_bench.cc, and prints a Markdown table beside eplb's figures.

The reference is not part of eplb: fetch deepseek-ai/EPLB yourself and point
--reference at the folder holding its eplb.py. Needs PyTorch
(Debian: apt-get install python3-torch).

  build/policy_bench --benchmark_format=json --benchmark_out=policy.json
  python3 bench/compare_policy.py --reference ~/EPLB --bench-json policy.json
"""
import argparse
import json
import os
import statistics
import sys
import time

SHAPES_DSV3 = [  # label, replicas, groups, nodes, ranks (as policy_bench.cc)
    ("R288-P32-N4", 288, 8, 4, 32),
    ("R288-P32-N1", 288, 8, 1, 32),
    ("R320-P64-N8", 320, 8, 8, 64),
    ("R288-P144-N18", 288, 8, 18, 144),
]


def qwen_shapes(experts):
    shapes = []
    for percent in (25, 50):
        replicas = experts + experts * percent // 100
        for ranks in (16, 8):
            label = f"R{replicas}-P{ranks}-N{ranks // 8}-{percent}pct"
            shapes.append((label, replicas, 1, ranks // 8, ranks))
    return shapes


def balancedness(load, phy2log, logcnt, ranks):
    per_rank = len(phy2log[0]) // ranks
    result = []
    for l, row in enumerate(phy2log):
        rank_load = [0.0] * ranks
        for s, e in enumerate(row):
            rank_load[s // per_rank] += load[l][e] / logcnt[l][e]
        top = max(rank_load)
        result.append(1.0 if top <= 0 else sum(rank_load) / ranks / top)
    return sum(result) / len(result)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="folder with the reference eplb.py")
    ap.add_argument("--bench-json", required=True, help="policy_bench --benchmark_out file")
    ap.add_argument("--loads", default=os.path.join(os.path.dirname(__file__), "..", "data", "loads"))
    ap.add_argument("--runs", type=int, default=3, help="reference runs per case (best kept)")
    args = ap.parse_args()

    sys.path.insert(0, args.reference)
    import torch
    from eplb import rebalance_experts

    # One figure per benchmark: the "min" aggregate when run with
    # --benchmark_repetitions, else the single run.
    ours = {}
    benchmarks = json.load(open(args.bench_json))["benchmarks"]
    has_min = any(b.get("aggregate_name") == "min" for b in benchmarks)
    for b in benchmarks:
        if has_min and b.get("aggregate_name") != "min":
            continue
        if not has_min and b.get("run_type", "iteration") != "iteration":
            continue
        _, stem, label = b["run_name"].split("/")[:3]
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        ours[(stem, label)] = (b["cpu_time"] * unit, b["balancedness"])

    rows = {}  # (model, label) -> list of (stem, ours_s, ref_s, ours_bal, ref_bal)
    for name in sorted(os.listdir(args.loads)):
        if not name.endswith(".json"):
            continue
        stem = name[:-5]
        load = json.load(open(os.path.join(args.loads, name)))["load"]
        experts = len(load[0])
        shapes = SHAPES_DSV3 if experts == 256 else qwen_shapes(experts)
        model = "DeepSeek-V3" if experts == 256 else stem.split("-")[0] + "-" + stem.split("-")[1]
        weight = torch.tensor(load, dtype=torch.float64)
        for label, replicas, groups, nodes, ranks in shapes:
            if (stem, label) not in ours:
                continue
            best = float("inf")
            for _ in range(args.runs):
                start = time.perf_counter()
                phy2log, _, logcnt = rebalance_experts(weight, replicas, groups, nodes, ranks)
                best = min(best, time.perf_counter() - start)
            ref_bal = balancedness(load, phy2log.tolist(), logcnt.tolist(), ranks)
            ours_s, ours_bal = ours[(stem, label)]
            rows.setdefault((model, label), []).append((stem, ours_s, best, ours_bal, ref_bal))
            print(f"{stem} {label}: eplb {ours_s * 1e3:.3f} ms, reference {best * 1e3:.1f} ms, "
                  f"balancedness {ours_bal:.4f} vs {ref_bal:.4f}", file=sys.stderr)

    print("| model | shape (slots-ranks-nodes) | files | eplb ms (median, range) | "
          "reference ms (median, range) | speedup (median) | balancedness eplb / reference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (model, label), cases in rows.items():
        o = [c[1] * 1e3 for c in cases]
        r = [c[2] * 1e3 for c in cases]
        speed = statistics.median(c[2] / c[1] for c in cases)
        ob = statistics.mean(c[3] for c in cases)
        rb = statistics.mean(c[4] for c in cases)
        print(f"| {model} | {label} | {len(cases)} | {statistics.median(o):.3f} "
              f"({min(o):.3f}-{max(o):.3f}) | {statistics.median(r):.0f} "
              f"({min(r):.0f}-{max(r):.0f}) | {speed:.0f}x | {ob:.4f} / {rb:.4f} |")


if __name__ == "__main__":
    main()
