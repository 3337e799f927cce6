#!/usr/bin/env python3
"""A small torch MoE model kept balanced by eplb.Balancer, on CPU.

    python3 examples/moe_balancer.py                 # starts 2 rank processes
    RANK=0 WORLD_SIZE=2 EPLB_STORE=file:/tmp/s python3 examples/moe_balancer.py   # one rank (launcher)

Each rank holds its share of every MoE layer's experts as tensors (w1
[slots, hidden, ffn], w2 [slots, ffn, hidden]); a router picks the top-k
experts of each token; the token goes to one replica of each (the replica
fixed by its position, as vLLM does) and the rank computes the tokens that
land on its own slots. Every step the rank records how many tokens each
expert got (record_load) and calls step(); every --interval steps the ranks
agree on a new placement and move expert weights between them over Gloo into
the same tensors. The router prefers a few experts that drift, so placements
keep changing. At the end every slot is checked against its expert's
weights (each expert's are made from a seed of its own, so any rank can tell).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

import torch

import eplb


def expert_weights(layer, expert, hidden, ffn):
    g = torch.Generator().manual_seed(layer * 100003 + expert)
    return (torch.randn(hidden, ffn, generator=g) / hidden ** 0.5,
            torch.randn(ffn, hidden, generator=g) / ffn ** 0.5)


class MoELayer:
    """Router + this rank's experts (its slots of the layer)."""

    def __init__(self, layer, args, rank, world, phy2log):
        self.layer, self.args = layer, args
        self.spr = args.slots // world
        self.first = rank * self.spr
        g = torch.Generator().manual_seed(7 + layer)
        self.router = torch.randn(args.hidden, args.experts, generator=g)
        mine = [int(e) for e in phy2log[layer, self.first:self.first + self.spr]]
        ws = [expert_weights(layer, e, args.hidden, args.ffn) for e in mine]
        self.w1 = torch.stack([w[0] for w in ws])  # [slots, hidden, ffn]
        self.w2 = torch.stack([w[1] for w in ws])  # [slots, ffn, hidden]

    def forward(self, x, step, placement):
        """Routes x [tokens, hidden]; returns (this rank's partial output, counts per expert)."""
        a = self.args
        logits = x @ self.router
        # A drifting preference: a few hot experts, shifting every 40 steps.
        hot = (torch.arange(a.experts) + self.layer + step // 40) % a.experts < 3
        logits = logits + 3.0 * hot
        weights, ids = logits.softmax(-1).topk(a.top_k, dim=-1)  # [tokens, k]
        counts = torch.bincount(ids.flatten(), minlength=a.experts)
        # The replica of each choice: log2phy[e][i % logcnt[e]] (i: flat position).
        cnt = placement.logcnt[self.layer][ids]
        pos = torch.arange(ids.numel()).view_as(ids)
        slot = placement.log2phy[self.layer][ids, pos % cnt]
        out = torch.zeros_like(x)
        local = (slot >= self.first) & (slot < self.first + self.spr)
        for s in torch.unique(slot[local]).tolist():
            tok, j = torch.nonzero(slot == s, as_tuple=True)
            i = s - self.first
            h = torch.relu(x[tok] @ self.w1[i]) @ self.w2[i]
            out.index_add_(0, tok, h * weights[tok, j, None])
        return out, counts


def say(line):
    """Prints one line in one write: the ranks share one stdout, and print()
    under PYTHONUNBUFFERED writes the text and its newline separately, so
    another rank's line could land between them."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_rank(args):
    env = eplb.launch_env()
    rank, world = env["rank"], env["world_size"]
    initial = torch.tensor([[p % args.experts for p in range(args.slots)]] * args.layers)
    layers = [MoELayer(l, args, rank, world, initial) for l in range(args.layers)]

    def report(r):
        if rank == 0:
            say(f"rebalance {r['cycle']} at step {r['trigger_step']}: balancedness "
                  f"{r['balancedness_before']:.3f} -> {r['balancedness_after']:.3f}, "
                  f"{r['experts_moved']} experts ({r['bytes_moved'] / 1e6:.1f} MB) moved, "
                  f"{r['seconds']:.2f} s, {'ok' if r['ok'] else r['error']}")

    bal = eplb.Balancer([[m.w1, m.w2] for m in layers], num_experts=args.experts, num_slots=args.slots,
                        window_steps=args.interval, step_interval=args.interval, initial=initial,
                        deadline_ms=5000, on_cycle=report)
    g = torch.Generator().manual_seed(rank)
    start = time.monotonic()
    for step in range(args.steps):
        placement = bal.placement()
        x = torch.randn(args.tokens, args.hidden, generator=g)
        for l, m in enumerate(layers):
            y, counts = m.forward(x, step, placement)
            bal.record_load(l, counts)
            x = x + y  # this rank's share; a real engine combines all ranks' (all-to-all)
        bal.step()
    # Let a cycle still running finish (stepping, as an engine would).
    deadline = time.monotonic() + 30
    while not bal.idle() and time.monotonic() < deadline:
        bal.step()
        time.sleep(0.005)
    p = bal.placement()
    bad = 0
    for l, m in enumerate(layers):
        for i in range(m.spr):
            w1, w2 = expert_weights(l, int(p.phy2log[l, m.first + i]), args.hidden, args.ffn)
            bad += not (torch.equal(m.w1[i], w1) and torch.equal(m.w2[i], w2))
    metrics = bal.metrics()
    bal.close()
    say(f"rank {rank}: {args.steps} steps in {time.monotonic() - start:.1f} s, "
          f"{metrics['cycles_completed']} rebalances, {metrics['bytes_moved_total'] / 1e6:.1f} MB moved, "
          f"balancedness {metrics['balancedness']:.3f}; {m.spr * args.layers} slots checked, {bad} wrong")
    return 0 if bad == 0 and metrics["cycles_failed"] == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2, help="rank processes to start (without a launcher)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--slots", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--interval", type=int, default=50)
    args = ap.parse_args()
    if "RANK" in os.environ:
        return run_rank(args)
    store = tempfile.mkdtemp(prefix="eplb-example-")
    env = dict(os.environ, WORLD_SIZE=str(args.ranks), EPLB_STORE=f"file:{store}",
               EPLB_RUN_ID=uuid.uuid4().hex[:12])
    procs = [subprocess.Popen([sys.executable] + sys.argv, env=dict(env, RANK=str(r))) for r in range(args.ranks)]
    codes = [p.wait() for p in procs]
    say("result: " + ("OK" if not any(codes) else f"FAILED (exit codes {codes})"))
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
