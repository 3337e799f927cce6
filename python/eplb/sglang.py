"""eplb as SGLang's EPLB algorithm.

``rebalance_experts`` has the signature and the result of SGLang's
``sglang.srt.eplb.eplb_algorithms.rebalance_experts``:

    rebalance_experts(tokens_per_expert, num_physical_experts,
                      num_local_physical_experts, num_groups, num_nodes, algorithm)
        -> (physical_to_logical_map, logical_to_all_physical_map, expert_count)

``tokens_per_expert`` is SGLang's window, [window, layers, num_logical_experts]
(summed over the window, as SGLang's deepseek algorithms do); the result is
int64 on the CPU: phy2log [layers, num_physical_experts], the map
[layers, num_logical_experts, X] of each expert's slots (ascending) padded
with -1 to X, the most replicas any expert has, and the replica counts
[layers, num_logical_experts].

``algorithm``, SGLang's ``EplbAlgorithm`` or its name: ``deepseek`` (global),
``deepseek_hierarchical`` (groups packed onto nodes first; needs
``num_groups % num_nodes == 0``), ``auto`` (SGLang's rule: hierarchical when
``num_groups`` is set and divides over the nodes), or one of eplb's own
policies (``eplb.policies()``). SGLang's ``deepseek_vec*`` and
``elasticity_aware`` are other algorithms and are refused.
"""
from typing import Any, Optional, Tuple

from . import _eplb
from ._convert import MAX_THREADS, host_array, like_input, positive_int
from .errors import InvalidArgument

__all__ = ["rebalance_experts"]


def _algorithm_name(algorithm: Any) -> str:
    name = getattr(algorithm, "name", algorithm)  # SGLang's enum, or its name
    if not isinstance(name, str):
        raise InvalidArgument(f"algorithm must be SGLang's EplbAlgorithm or a name, not {algorithm!r}")
    return name


def rebalance_experts(tokens_per_expert: Any, num_physical_experts: int, num_local_physical_experts: int,
                      num_groups: Optional[int], num_nodes: int, algorithm: Any,
                      *, threads: int = 1) -> Tuple[Any, Any, Any]:
    """SGLang's EPLB entry point computed by eplb (see the module's doc)."""
    name = _algorithm_name(algorithm)
    physical = positive_int(num_physical_experts, "num_physical_experts")
    local = positive_int(num_local_physical_experts, "num_local_physical_experts")
    nodes = positive_int(num_nodes, "num_nodes")
    groups = None if num_groups is None else positive_int(num_groups, "num_groups")
    if physical % local != 0:
        raise InvalidArgument(f"num_physical_experts {physical} is not a multiple of "
                              f"num_local_physical_experts {local}")
    if name == "auto":
        name = "deepseek_hierarchical" if groups is not None and groups % nodes == 0 else "deepseek"
    if name == "deepseek":
        policy, g, n = "deepseek", 1, 1
    elif name == "deepseek_hierarchical":
        if groups is None or groups % nodes != 0:
            raise InvalidArgument(f"deepseek_hierarchical needs num_groups divisible by num_nodes, got "
                                  f"num_groups={groups}, num_nodes={nodes}")
        policy, g, n = "deepseek", groups, nodes
    elif name in _eplb.policies():
        policy, g, n = name, groups or 1, nodes
    else:
        raise InvalidArgument(f"algorithm {name!r} is not served by eplb: use auto, deepseek, "
                              f"deepseek_hierarchical or one of eplb's policies ({', '.join(_eplb.policies())})")
    arr, as_tensor = host_array(tokens_per_expert, "tokens_per_expert")
    out = _eplb.rebalance(arr, physical, g, n, physical // local, policy, None,
                          positive_int(threads, "threads", minimum=0, maximum=MAX_THREADS), "max", True)
    return like_input(out, as_tensor)
