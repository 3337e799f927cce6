"""examples/moe_balancer.py runs as documented: 2 rank processes on CPU,
rebalances, every slot holding its expert's weights at the end."""
import os
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "moe_balancer.py"


def test_the_example_runs_on_two_cpu_ranks():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "EPLB_STORE")}
    run = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "120", "--interval", "40"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "result: OK" in lines
    assert sum("0 wrong" in line for line in lines) == 2
    # Rebalances at steps 40 and 80 unless the first is still moving weights
    # at 80 (how long depends on the load and the communicator): at least
    # one, and every one that ran succeeded.
    rebalances = [line for line in lines if line.startswith("rebalance ")]
    assert rebalances and all(line.endswith("ok") for line in rebalances), run.stdout[-3000:]
    assert rebalances[0].startswith("rebalance 1 at step 40"), run.stdout[-3000:]
