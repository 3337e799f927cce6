"""eplb.sglang against SGLang's EPLB algorithm contract:
rebalance_experts(tokens_per_expert [window, layers, experts], num_physical_experts,
num_local_physical_experts, num_groups, num_nodes, algorithm) ->
(physical_to_logical_map, logical_to_all_physical_map padded with -1, expert_count)."""
import enum

import numpy as np
import pytest
import torch

import eplb
import eplb.sglang
from conftest import load_files, read_load


class EplbAlgorithm(enum.Enum):
    """Stands in for SGLang's enum of the same name (SGLang is not installed here)."""
    deepseek = enum.auto()
    deepseek_hierarchical = enum.auto()
    deepseek_vec = enum.auto()
    deepseek_vec_hierarchical = enum.auto()
    elasticity_aware = enum.auto()


def window(path, steps=4):
    """A window of `steps` steps whose sum is the measured load."""
    load = torch.tensor(read_load(path), dtype=torch.int64)
    parts = [load // steps] * (steps - 1)
    return torch.stack(parts + [load - sum(parts)])


@pytest.mark.parametrize("algorithm,hierarchical", [
    (EplbAlgorithm.deepseek, False), (EplbAlgorithm.deepseek_hierarchical, True),
    ("deepseek", False), ("deepseek_hierarchical", True), ("auto", True),
])
def test_contract_on_measured_loads(algorithm, hierarchical):
    path = [f for f in load_files() if f.stem.startswith("deepseek-v3")][0]
    tokens = window(path)
    phy2log, log2phy, count = eplb.sglang.rebalance_experts(tokens, 288, 9, 8, 4, algorithm)
    layers, experts = tokens.shape[1:]
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.device.type == "cpu"
               for x in (phy2log, log2phy, count))
    assert tuple(phy2log.shape) == (layers, 288) and tuple(count.shape) == (layers, experts)
    assert log2phy.shape[:2] == (layers, experts) and log2phy.shape[2] == int(count.max())
    for l in range(layers):
        assert (torch.bincount(phy2log[l], minlength=experts) == count[l]).all()
        assert (count[l] >= 1).all()
        for e in range(experts):
            slots = log2phy[l, e]
            assert (slots[:count[l, e]] >= 0).all() and (slots[count[l, e]:] == -1).all()
            assert (phy2log[l, slots[:count[l, e]]] == e).all()
    # The same as eplb's DeepSeek policy on the summed window, global or hierarchical.
    g, n = (8, 4) if hierarchical else (1, 1)
    expected = eplb.rebalance_experts(tokens.sum(0), 288, g, n, 32)
    assert torch.equal(phy2log, expected[0]) and torch.equal(count, expected[2])
    assert torch.equal(log2phy, expected[1][:, :, :log2phy.shape[2]])


def test_numpy_window_and_eplb_policies():
    tokens = window(load_files()[-1]).numpy()
    phy2log, log2phy, count = eplb.sglang.rebalance_experts(tokens, 160, 20, None, 1, "balanced")
    assert isinstance(phy2log, np.ndarray) and phy2log.shape == (tokens.shape[1], 160)
    assert (np.asarray(count) >= 1).all()
    auto = eplb.sglang.rebalance_experts(tokens, 160, 20, None, 1, "auto")  # no groups: global
    glob = eplb.sglang.rebalance_experts(tokens, 160, 20, 1, 1, "deepseek")
    assert all((a == b).all() for a, b in zip(auto, glob))


@pytest.mark.parametrize("algorithm", [EplbAlgorithm.deepseek_vec, EplbAlgorithm.deepseek_vec_hierarchical,
                                       EplbAlgorithm.elasticity_aware])
def test_sglang_only_algorithms_are_refused(algorithm):
    with pytest.raises(ValueError, match="is not served by eplb"):
        eplb.sglang.rebalance_experts(window(load_files()[0]), 288, 9, 8, 4, algorithm)
