#!/usr/bin/env python3
"""Python call overhead of eplb's policies: eplb.vllm.EplbPolicy.rebalance_experts
(vLLM's policy interface) against the same C++ work, on the DeepSeek-V3 loads
of data/loads at 288 slots / 32 ranks / 4 nodes (8 groups), one thread.

For each file: weight as vLLM passes it (int32 counts, a CPU tensor), the map
in force (old_global_expert_indices, int64) being the deepseek placement of
the previous file. Figures, best of --repeat calls each:
  C++ compute   ComputePlacement in C++ on input already in eplb's types
                (validation, policy, slot preservation), as an engine
                linking eplb calls it -- the baseline;
  C++ policy    Policy::Rebalance alone (what `eplb plan` reports);
  vLLM+old      EplbPolicy.rebalance_experts(weight, 288, 8, 4, 32, old);
  vLLM          the same without the old map (vs C++ compute without one).

  PYTHONPATH=build/python /usr/bin/python3 bench/python_policy_bench.py
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

import eplb
from eplb import _eplb
from eplb.vllm import EplbPolicy

SHAPE = (288, 8, 4, 32)


def best_ms(f, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default=os.path.join(os.path.dirname(__file__), "..", "data", "loads"))
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json", help="write the per-file figures here")
    args = ap.parse_args()
    files = sorted(f for f in os.listdir(args.loads) if f.startswith("deepseek-v3") and f.endswith(".json"))
    if not files:
        sys.exit(f"no deepseek-v3 loads in {args.loads}")
    loads = [torch.tensor(json.load(open(os.path.join(args.loads, f)))["load"], dtype=torch.int32) for f in files]
    EplbPolicy.use_policy("deepseek")
    EplbPolicy.use_threads(1)
    rows = []
    for i, (name, w) in enumerate(zip(files, loads)):
        old = eplb.rebalance_experts(loads[i - 1], *SHAPE, threads=1)[0]  # the map in force
        cpp = _eplb._time_compute_placement(w.numpy(), *SHAPE, "deepseek", old.numpy(), args.repeat)
        cpp_fresh = _eplb._time_compute_placement(w.numpy(), *SHAPE, "deepseek", None, args.repeat)
        with_old = best_ms(lambda: EplbPolicy.rebalance_experts(w, *SHAPE, old), args.repeat)
        fresh = best_ms(lambda: EplbPolicy.rebalance_experts(w, *SHAPE), args.repeat)
        # The result is the C++ policy's (bit for bit).
        assert torch.equal(EplbPolicy.rebalance_experts(w, *SHAPE, old),
                           eplb.rebalance_experts(w, *SHAPE, previous=old, threads=1)[0])
        rows.append({"file": name[:-5], "cpp_compute_ms": cpp["compute_placement"] * 1e3,
                     "cpp_policy_ms": cpp["policy"] * 1e3, "cpp_compute_fresh_ms": cpp_fresh["compute_placement"] * 1e3,
                     "vllm_old_ms": with_old, "vllm_ms": fresh})
    print("| load | C++ compute ms | C++ policy ms | vLLM+old ms | ratio | C++ compute (no old) ms | vLLM ms | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['file']} | {r['cpp_compute_ms']:.3f} | {r['cpp_policy_ms']:.3f} | {r['vllm_old_ms']:.3f} | "
              f"{r['vllm_old_ms'] / r['cpp_compute_ms']:.2f}x | {r['cpp_compute_fresh_ms']:.3f} | {r['vllm_ms']:.3f} | "
              f"{r['vllm_ms'] / r['cpp_compute_fresh_ms']:.2f}x |")
    ratio_old = [r["vllm_old_ms"] / r["cpp_compute_ms"] for r in rows]
    ratio = [r["vllm_ms"] / r["cpp_compute_fresh_ms"] for r in rows]
    print(f"\nmedian ratio with the old map {statistics.median(ratio_old):.3f}x (max {max(ratio_old):.3f}x), "
          f"without {statistics.median(ratio):.3f}x (max {max(ratio):.3f}x); "
          f"overhead with the old map {statistics.median(r['vllm_old_ms'] - r['cpp_compute_ms'] for r in rows) * 1e3:.0f} us "
          f"(median); load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
