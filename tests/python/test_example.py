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
    assert any(line.startswith("rebalance 2 at step 80") and line.endswith("ok") for line in lines)
