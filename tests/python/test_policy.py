"""eplb.rebalance_experts against the C++ policy as the CLI runs it
(`eplb plan` on every file of data/loads), for every policy, with and without
a previous placement, and for every kind of input it takes."""
import json
import subprocess

import numpy as np
import pytest
import torch

import eplb
from conftest import load_files, read_load

# (replicas, groups, nodes, ranks) per model width: hierarchical and global.
SHAPES = {
    256: [(288, 8, 4, 32), (320, 8, 8, 64), (288, 8, 18, 144)],
    128: [(160, 1, 2, 16), (192, 4, 2, 8)],
    64: [(80, 1, 2, 16), (96, 4, 1, 8)],
}


def plan(cli, tmp_path, load_path, shape, policy, previous=None):
    out = tmp_path / "out.json"
    r, g, n, p = shape
    cmd = [str(cli), "plan", "--load", str(load_path), "--replicas", str(r), "--groups", str(g),
           "--nodes", str(n), "--ranks", str(p), "--policy", policy, "--repeat", "1",
           "--output", str(out)]
    if previous is not None:
        prev = tmp_path / "previous.json"
        prev.write_text(json.dumps({"phy2log": previous}))
        cmd += ["--previous", str(prev)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return json.loads(out.read_text())


def assert_same_as_cli(result, expected, num_replicas, num_experts):
    phy2log, log2phy, logcnt = (np.asarray(x) for x in result)
    assert phy2log.dtype == log2phy.dtype == logcnt.dtype == np.int64
    assert phy2log.tolist() == expected["phy2log"]
    assert logcnt.tolist() == expected["logcnt"]
    width = len(expected["log2phy"][0][0])
    assert log2phy.shape == (len(expected["phy2log"]), num_experts, num_replicas - num_experts + 1)
    assert log2phy[:, :, :width].tolist() == expected["log2phy"]
    assert (log2phy[:, :, width:] == -1).all()


CASES = [(f, shape) for f in load_files() for shape in SHAPES[len(read_load(f)[0])]]


@pytest.mark.parametrize("load_path,shape", CASES, ids=[f"{f.stem}-{s[0]}-{s[2]}-{s[3]}" for f, s in CASES])
def test_deepseek_equals_the_cli_on_measured_loads(cli, tmp_path, load_path, shape):
    expected = plan(cli, tmp_path, load_path, shape, "deepseek")
    load = read_load(load_path)
    result = eplb.rebalance_experts(torch.tensor(load, dtype=torch.int32), *shape)
    assert all(isinstance(x, torch.Tensor) and x.device.type == "cpu" for x in result)
    assert_same_as_cli(result, expected, shape[0], len(load[0]))


@pytest.mark.parametrize("policy", ["deepseek", "balanced", "locality", "movement"])
def test_every_policy_with_a_previous_placement_equals_the_cli(cli, tmp_path, policy):
    files = [f for f in load_files() if f.stem.startswith("deepseek-v3")]
    shape = (288, 8, 4, 32)
    first = plan(cli, tmp_path, files[0], shape, "deepseek")
    for load_path in files[1:4]:
        expected = plan(cli, tmp_path, load_path, shape, policy, previous=first["phy2log"])
        result = eplb.rebalance_experts(np.array(read_load(load_path)), *shape, policy=policy,
                                        previous=np.array(first["phy2log"]), threads=2)
        assert_same_as_cli(result, expected, 288, 256)
        # Slot preservation: an expert the rank kept stays in its slot.
        kept = moved = 0
        for old_row, new_row in zip(first["phy2log"], result[0].tolist()):
            for rank in range(32):
                old, new = old_row[rank * 9:rank * 9 + 9], new_row[rank * 9:rank * 9 + 9]
                for i, e in enumerate(old):
                    if e in new:
                        kept += 1
                        moved += new[i] != e and new.count(e) == 1 and old.count(e) == 1
        assert kept > 0 and moved == 0


def test_threads_do_not_change_the_placement():
    load = np.array(read_load(load_files()[0]))
    one = eplb.rebalance_experts(load, 288, 8, 4, 32, threads=1)
    for threads in (0, 2, 3):
        other = eplb.rebalance_experts(load, 288, 8, 4, 32, threads=threads)
        assert all((a == b).all() for a, b in zip(one, other))


DTYPES = [torch.int32, torch.int64, torch.int16, torch.uint8, torch.float16, torch.bfloat16,
          torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d) for d in DTYPES])
def test_every_tensor_dtype_reads_like_float64(dtype):
    rng = np.random.default_rng(7)
    load = rng.integers(0, 200, size=(6, 32))  # exact in every dtype above
    expected = eplb.rebalance_experts(load.astype(np.float64), 48, 4, 2, 8)
    result = eplb.rebalance_experts(torch.tensor(load).to(dtype), 48, 4, 2, 8)
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.int64 for x in result)
    assert all((a.numpy() == b).all() for a, b in zip(result, expected))


def test_numpy_lists_and_strided_views_agree():
    rng = np.random.default_rng(3)
    wide = rng.random((8, 64)) * 1000
    load = wide[::2, ::2]  # strided, not contiguous
    assert not load.flags.c_contiguous
    from_view = eplb.rebalance_experts(load, 40, 4, 2, 4)
    from_copy = eplb.rebalance_experts(np.ascontiguousarray(load), 40, 4, 2, 4)
    from_list = eplb.rebalance_experts(load.tolist(), 40, 4, 2, 4)
    from_tensor = eplb.rebalance_experts(torch.from_numpy(wide)[::2, ::2], 40, 4, 2, 4)
    assert isinstance(from_view[0], np.ndarray) and isinstance(from_list[0], np.ndarray)
    for other in (from_copy, from_list, from_tensor):
        assert all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(from_view, other))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device for torch here")
def test_a_cuda_tensor_is_copied_to_the_host():
    load = torch.randint(0, 100, (4, 16), dtype=torch.int32)
    host = eplb.rebalance_experts(load, 24, 4, 2, 8)
    device = eplb.rebalance_experts(load.cuda(), 24, 4, 2, 8)
    assert all(d.device.type == "cpu" and (d == h).all() for d, h in zip(device, host))


def test_maps_are_consistent_and_every_expert_has_a_slot():
    load = torch.tensor(read_load(load_files()[-1]))
    phy2log, log2phy, logcnt = eplb.rebalance_experts(load, 192, 4, 2, 8, policy="balanced")
    for l in range(load.shape[0]):
        counts = torch.bincount(phy2log[l], minlength=load.shape[1])
        assert (counts >= 1).all() and (counts == logcnt[l]).all()
        for e in range(load.shape[1]):
            slots = [s for s in log2phy[l, e].tolist() if s >= 0]
            assert slots == sorted(slots) and len(slots) == logcnt[l, e]
            assert all(phy2log[l, s] == e for s in slots)


def test_policies_lists_deepseek_first_and_describes_each():
    names = eplb.policies()
    assert names[0] == "deepseek" and {"balanced", "locality", "movement"} <= set(names)
    assert all(eplb.policy_description(n) for n in names)
