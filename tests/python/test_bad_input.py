"""Every kind of bad input to the policy entry points raises
eplb.InvalidArgument (a ValueError) with a message that names the problem."""
import numpy as np
import pytest
import torch

import eplb
import eplb.sglang
import eplb.vllm

LOAD = np.random.default_rng(1).integers(1, 100, size=(4, 16))
GOOD = (LOAD, 24, 4, 2, 8)  # 16 experts -> 24 slots, 4 groups, 2 nodes, 8 ranks
PREV = eplb.rebalance_experts(*GOOD)[0]


def call(**change):
    args = dict(zip(["weight", "num_replicas", "num_groups", "num_nodes", "num_gpus"], GOOD))
    kwargs = {k: change.pop(k) for k in ("policy", "previous", "threads") if k in change}
    args.update(change)
    return lambda: eplb.rebalance_experts(*args.values(), **kwargs)


def nan_load():
    x = LOAD.astype(float)
    x[2, 3] = np.nan
    return x


CASES = [
    ("replicas not divisible by ranks", call(num_replicas=25), "25 replicas do not divide over 8 ranks"),
    ("fewer replicas than experts", call(num_replicas=8), "8 replicas cannot hold 16 experts"),
    ("experts not divisible by groups", call(num_groups=3), "16 experts do not split into 3 equal groups"),
    ("ranks not divisible by nodes", call(num_nodes=4, num_gpus=6), "6 ranks"),
    ("zero replicas", call(num_replicas=0), "num_replicas must be in"),
    ("negative ranks", call(num_gpus=-8), "num_gpus must be in"),
    ("float shape", call(num_groups=4.0), "num_groups must be an integer"),
    ("bool shape", call(num_nodes=True), "num_nodes must be an integer, not bool"),
    ("negative load", call(weight=-LOAD), "non-negative"),
    ("NaN load", call(weight=nan_load()), "layer 2, expert 3"),
    ("infinite load", call(weight=np.full((4, 16), np.inf)), "finite"),
    ("1-D load", call(weight=LOAD[0]), "must have 2 dimensions"),
    ("3-D load", call(weight=LOAD[None]), "must have 2 dimensions"),
    ("empty load", call(weight=np.zeros((0, 16))), "empty"),
    ("ragged list", call(weight=[[1, 2, 3], [4, 5]]), "ragged"),
    ("strings", call(weight=[["a", "b"]]), "not real numbers"),
    ("complex tensor", call(weight=torch.ones(4, 16, dtype=torch.complex64)), "complex"),
    ("complex array", call(weight=np.ones((4, 16), dtype=complex)), "not real numbers"),
    ("not an array", call(weight="load"), "must be a torch tensor, a numpy array or a nested list"),
    ("None load", call(weight=None), "must be a torch tensor"),
    ("unknown policy", call(policy="nope"), "unknown policy 'nope' (valid: deepseek"),
    ("policy not a string", call(policy=3), "policy must be a name"),
    ("negative threads", call(threads=-1), "threads must be in [0, 1024], not -1"),
    ("too many threads", call(threads=5000), "threads must be in [0, 1024]"),
    ("previous of another shape", call(previous=PREV[:, :16]), "previous placement must have shape [4, 24]"),
    ("previous of floats", call(previous=PREV.astype(float)), "must hold integers"),
    ("previous naming no expert", call(previous=np.where(PREV == 5, 99, PREV)), "previous placement: layer 0 slot 17 holds expert 99, outside [0, 16)"),
    ("previous missing an expert", call(previous=np.where(PREV == 5, 4, PREV)), "previous placement: layer 0: expert 5 has no slot"),
    ("previous beyond int32", call(previous=np.where(PREV == 5, 2**40, PREV)), "not an expert id"),
    ("bad shape named before previous", call(num_replicas=25, previous=PREV), "25 replicas do not divide"),
    ("vLLM: bad env policy", None, "EPLB_POLICY='nope' is not a policy"),
    ("vLLM: unknown policy", lambda: eplb.vllm.EplbPolicy.use_policy("nope"), "unknown policy 'nope'"),
    ("SGLang: vec algorithm", lambda: eplb.sglang.rebalance_experts(LOAD[None], 24, 3, 4, 2, "deepseek_vec"),
     "'deepseek_vec' is not served by eplb"),
    ("SGLang: 2-D window", lambda: eplb.sglang.rebalance_experts(LOAD, 24, 3, 4, 2, "deepseek"),
     "tokens_per_expert must have 3 dimensions"),
    ("SGLang: local does not divide", lambda: eplb.sglang.rebalance_experts(LOAD[None], 24, 5, 4, 2, "auto"),
     "not a multiple of num_local_physical_experts 5"),
    ("SGLang: hierarchical without groups",
     lambda: eplb.sglang.rebalance_experts(LOAD[None], 24, 3, None, 2, "deepseek_hierarchical"),
     "deepseek_hierarchical needs num_groups divisible by num_nodes"),
    ("SGLang: algorithm not a name", lambda: eplb.sglang.rebalance_experts(LOAD[None], 24, 3, 4, 2, 7),
     "algorithm must be SGLang's EplbAlgorithm or a name"),
]


@pytest.mark.parametrize("name,fn,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error_naming_it(name, fn, message, monkeypatch):
    if fn is None:  # the vLLM policy reads EPLB_POLICY at the call
        monkeypatch.setenv("EPLB_POLICY", "nope")
        fn = lambda: eplb.vllm.EplbPolicy.rebalance_experts(torch.tensor(LOAD), 24, 4, 2, 8)  # noqa: E731
    with pytest.raises(ValueError) as info:
        fn()
    assert isinstance(info.value, eplb.InvalidArgument)
    assert message in str(info.value), str(info.value)


def test_good_input_passes():
    phy2log, _, _ = eplb.rebalance_experts(*GOOD, previous=PREV)
    assert phy2log.shape == (4, 24)
