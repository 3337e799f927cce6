"""eplb's placement policies with DeepSeek's EPLB signature.

``rebalance_experts`` takes what DeepSeek's ``eplb.rebalance_experts`` takes
and returns what it returns, computed by eplb's C++ policies (the default,
``deepseek``, is DeepSeek's algorithm under a stable tie order: among equal
loads the lower index first).
"""
from typing import Any, List, Optional, Tuple

from . import _eplb
from ._convert import MAX_THREADS, host_array, like_input, positive_int
from .errors import InvalidArgument

__all__ = ["rebalance_experts", "policies", "policy_description"]


def policies() -> List[str]:
    """Every policy name eplb has, ``"deepseek"`` first."""
    return list(_eplb.policies())


def policy_description(name: str) -> str:
    """One line about the policy ``name``."""
    return _eplb.policy_description(_policy_name(name))


def _policy_name(policy: Any) -> str:
    if not isinstance(policy, str):
        raise InvalidArgument(f"policy must be a name (one of {', '.join(policies())}), not {policy!r}")
    return policy


def _threads(threads: Any) -> int:
    return positive_int(threads, "threads", minimum=0, maximum=MAX_THREADS)


def rebalance_experts(weight: Any, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int,
                      *, policy: str = "deepseek", previous: Optional[Any] = None,
                      threads: int = 0) -> Tuple[Any, Any, Any]:
    """Places ``num_replicas`` physical experts per layer on ``num_gpus`` ranks.

    Parameters (as DeepSeek's EPLB):
        weight: [layers, num_logical_experts] load of each logical expert; a
            torch tensor of any real dtype on any device (copied to the host),
            a numpy array or a nested list.
        num_replicas: physical experts per layer, a multiple of ``num_gpus``.
        num_groups: expert groups (group-limited routing).
        num_nodes: server nodes; hierarchical placement when
            ``num_groups % num_nodes == 0``, else global.
        num_gpus: ranks, a multiple of ``num_nodes`` where hierarchical.
    Keyword-only (eplb's):
        policy: one of ``policies()``.
        previous: the placement in force, [layers, num_replicas] logical ids
            (phy2log); experts that stay on a rank keep their slot there.
        threads: threads the layers are split over (0: one per core); the
            placement is the same with any number.

    Returns ``(phy2log, log2phy, logcnt)``, int64, as torch tensors on the
    CPU for a tensor ``weight`` and as numpy arrays otherwise:
        phy2log: [layers, num_replicas], the logical expert of each slot;
        log2phy: [layers, num_logical_experts, num_replicas - num_logical_experts + 1],
            the slots of each expert, ascending, padded with -1;
        logcnt: [layers, num_logical_experts], replicas of each expert.

    The GIL is released while the policy runs. Bad input raises
    ``eplb.InvalidArgument`` (a ``ValueError``) naming the problem.
    """
    arr, as_tensor = host_array(weight, "weight")
    prev = None if previous is None else host_array(previous, "previous")[0]
    out = _eplb.rebalance(arr, positive_int(num_replicas, "num_replicas"),
                          positive_int(num_groups, "num_groups"), positive_int(num_nodes, "num_nodes"),
                          positive_int(num_gpus, "num_gpus"), _policy_name(policy), prev,
                          _threads(threads), "deepseek", False)
    return like_input(out, as_tensor)
