"""One rank of the multi-process balancer tests (test_balancer.py starts
these as real processes; they meet through a file store and move expert
weights over real Gloo on loopback).

    balancer_worker.py CONFIG_JSON OUT_JSON

RANK, WORLD_SIZE, EPLB_STORE and EPLB_RUN_ID come from the environment, as a
launcher sets them. Every expert's bytes are a fingerprint of (layer, expert,
tensor): each committed layer is checked at its commit, every slot at the
end. The victim rank of a kill run kills itself (SIGKILL) one step after a
cycle started; the others raise CycleFailed and say when."""
import json
import os
import signal
import sys
import time

import torch

import eplb

LAYERS, EXPERTS, SLOTS, GROUPS = 4, 16, 24, 4


def fingerprint(layer, expert, tensor):
    """The content of one expert's slice of tensor `tensor` (0: float32 [64],
    1: int64 [8, 4])."""
    if tensor == 0:
        return layer * 100.0 + expert + torch.arange(64, dtype=torch.float32) / 128
    base = (layer << 32) | (expert << 16) | (tensor << 8)
    return (base + torch.arange(32, dtype=torch.int64)).view(8, 4)


def main():
    cfg = json.load(open(sys.argv[1]))
    out_path = sys.argv[2]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    spr = SLOTS // world
    initial = eplb.rebalance_experts(torch.ones(LAYERS, EXPERTS), SLOTS, GROUPS, 1, world)[0]
    weights = []
    for l in range(LAYERS):
        mine = initial[l, rank * spr:(rank + 1) * spr].tolist()
        w0 = torch.stack([fingerprint(l, e, 0) for e in mine])
        w1 = torch.stack([fingerprint(l, e, 1) for e in mine])
        weights.append([w0, w1])
    result = {"rank": rank, "mismatches": [], "commits": 0, "cycles": []}

    def check(layer, when):
        phy2log = bal.placement().phy2log
        for i in range(spr):
            e = int(phy2log[layer, rank * spr + i])
            for t, w in enumerate(weights[layer]):
                if not torch.equal(w[i], fingerprint(layer, e, t)):
                    result["mismatches"].append(f"{when}: layer {layer} slot {rank * spr + i} "
                                                f"tensor {t} does not hold expert {e}")

    def on_commit(event):
        result["commits"] += 1
        check(event["layer"], "at commit")

    bal = eplb.Balancer(weights, num_experts=EXPERTS, num_slots=SLOTS, num_groups=GROUPS, mode=cfg["mode"],
                        window_steps=10, first_rebalance_step=10, step_interval=60,
                        deadline_ms=cfg["deadline_ms"], commit_lead_steps=2, initial=initial,
                        on_commit=on_commit, on_cycle=lambda r: result["cycles"].append(r),
                        raise_on_failure=cfg.get("raise_on_failure", False))
    gen = torch.Generator().manual_seed(rank)
    hot = torch.tensor([8.0 if e % 5 == 0 else 1.0 for e in range(EXPERTS)])
    victim = cfg.get("victim")
    try:
        for step in range(cfg["steps"]):
            # Skewed load whose hot experts move between the two cycles.
            weights_now = hot.roll(step // 60 + rank)
            for l in range(LAYERS):
                counts = torch.multinomial(weights_now.roll(l), 64, replacement=True, generator=gen)
                bal.record_load(l, torch.bincount(counts, minlength=EXPERTS))
            bal.step()
            if rank == victim and bal.metrics()["cycle_in_progress"] and bal.steps > 10:
                with open(out_path, "w") as f:
                    json.dump({"rank": rank, "killed_at": time.monotonic()}, f)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.01)
        # Wait (stepping, as an engine does) until this rank has finished its
        # cycles, then for every rank to have (a file each), without stepping.
        deadline = time.monotonic() + 20
        while not bal.idle() and time.monotonic() < deadline:
            bal.step()
            time.sleep(0.01)
        result["idle"] = bal.idle()
        open(os.path.join(cfg["barrier"], f"idle.{rank}"), "w").close()
        while len(os.listdir(cfg["barrier"])) < world and time.monotonic() < deadline:
            time.sleep(0.01)
    except eplb.CycleFailed as e:
        result["raised"] = {"at": time.monotonic(), "peer": e.peer, "message": str(e),
                            "type": type(e).__name__}
    for l in range(LAYERS):
        check(l, "at the end")
    result["metrics"] = bal.metrics()
    result["phy2log"] = bal.placement().phy2log.tolist()
    result["prometheus"] = bal.prometheus_text()
    bal.close()
    with open(out_path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main()
