"""eplb as vLLM's EPLB policy.

``EplbPolicy`` has vLLM's policy interface (``vllm.distributed.eplb.policy``):
a class method ``rebalance_experts(weight, num_replicas, num_groups,
num_nodes, num_ranks, old_global_expert_indices=None)`` that returns the new
physical-to-logical map, [layers, num_replicas] int64 on the CPU. ``weight``
is the load window summed over steps, [layers, num_logical_experts] (int32
counts on the CPU in vLLM; any real dtype on any device is taken);
``old_global_expert_indices`` is the map in force, [layers, num_replicas], and
serves as the previous placement: an expert that stays on a rank keeps its
slot there, so vLLM moves only what changes rank.

The policy is eplb's ``deepseek`` (DeepSeek's EPLB, as vLLM's default) unless
``EplbPolicy.use_policy(name)`` or the environment variable ``EPLB_POLICY``
names another (``eplb.policies()``). The policy runs on
``EPLB_POLICY_THREADS`` threads (default 1: vLLM runs a process per GPU).

The plugin: installing eplb registers ``register`` in the entry-point group
``vllm.general_plugins`` (vLLM calls every plugin of that group in each of
its processes). It replaces the entry ``"default"`` of vLLM's policy registry
(``vllm.distributed.eplb.policy.EPLB_POLICIES``) with ``EplbPolicy`` when
enabled: ``EPLB_VLLM_PLUGIN=1``, or ``VLLM_PLUGINS`` naming ``eplb``;
``EPLB_VLLM_PLUGIN=0`` keeps vLLM's own policy even then. docs/vllm.md shows
how.
"""
import functools
import logging
import os
import sys
from typing import Any, Optional

from . import _eplb
from ._convert import MAX_THREADS, host_array, is_tensor, positive_int, torch_module
from .errors import InvalidArgument

__all__ = ["EplbPolicy", "register", "plugin_enabled"]

logger = logging.getLogger("eplb")

POLICY_ENV = "EPLB_POLICY"
THREADS_ENV = "EPLB_POLICY_THREADS"
PLUGIN_ENV = "EPLB_VLLM_PLUGIN"


def _vllm_base():
    """vLLM's abstract policy class when vLLM's policy package is already
    imported, so isinstance and
    issubclass checks hold; a plain object otherwise. Never imports vLLM:
    importing it from here, in the middle of vLLM's own start-up, could meet
    half-initialised modules."""
    module = sys.modules.get("vllm.distributed.eplb.policy.abstract")
    return getattr(module, "AbstractEplbPolicy", object)


@functools.lru_cache(maxsize=16)
def _env_policy(name: str) -> str:
    """EPLB_POLICY's value, checked once per value."""
    if name not in _eplb.policies():
        raise InvalidArgument(f"{POLICY_ENV}={name!r} is not a policy; eplb has {', '.join(_eplb.policies())}")
    return name


@functools.lru_cache(maxsize=16)
def _env_threads(text: str) -> int:
    """EPLB_POLICY_THREADS's value, parsed once per value."""
    try:
        return positive_int(int(text), THREADS_ENV, minimum=0, maximum=MAX_THREADS)
    except ValueError:
        raise InvalidArgument(f"{THREADS_ENV}={text!r} is not a thread count") from None


class EplbPolicy(_vllm_base()):  # type: ignore[misc]
    """vLLM's EPLB policy interface over eplb's C++ policies."""

    _policy: Optional[str] = None
    _threads: Optional[int] = None

    @classmethod
    def use_policy(cls, name: Optional[str]) -> None:
        """Use eplb's policy ``name`` from now on (None: ``EPLB_POLICY``, else deepseek)."""
        if name is not None and name not in _eplb.policies():
            raise InvalidArgument(f"unknown policy {name!r}; eplb has {', '.join(_eplb.policies())}")
        cls._policy = name

    @classmethod
    def use_threads(cls, threads: Optional[int]) -> None:
        """Split the policy's layers over ``threads`` (0: one per core; None: ``EPLB_POLICY_THREADS``, else 1)."""
        cls._threads = None if threads is None else positive_int(threads, "threads", minimum=0, maximum=MAX_THREADS)

    @classmethod
    def policy_name(cls) -> str:
        """The eplb policy this class runs now."""
        if cls._policy is not None:
            return cls._policy
        return _env_policy(os.environ.get(POLICY_ENV) or "deepseek")

    @classmethod
    def threads(cls) -> int:
        """Threads the policy's layers are split over."""
        if cls._threads is not None:
            return cls._threads
        return _env_threads(os.environ.get(THREADS_ENV) or "1")

    @classmethod
    def rebalance_experts(cls, weight: Any, num_replicas: int, num_groups: int, num_nodes: int,
                          num_ranks: int, old_global_expert_indices: Optional[Any] = None) -> Any:
        """The new physical-to-logical map, [layers, num_replicas] int64 on the CPU
        (a torch tensor; a numpy array when ``weight`` is not a tensor)."""
        arr, as_tensor = host_array(weight, "weight")
        previous = None
        if old_global_expert_indices is not None:
            previous = host_array(old_global_expert_indices, "old_global_expert_indices")[0]
            # A map of another width is no placement to keep slots of: the
            # number of physical experts changed (elastic EP), start afresh.
            if previous.ndim == 2 and arr.ndim == 2 and previous.shape[0] == arr.shape[0] \
                    and previous.shape[1] != num_replicas:
                previous = None
        phy2log, _, _ = _eplb.rebalance(
            arr, positive_int(num_replicas, "num_replicas"), positive_int(num_groups, "num_groups"),
            positive_int(num_nodes, "num_nodes"), positive_int(num_ranks, "num_ranks"),
            cls.policy_name(), previous, cls.threads(), "none", False)
        if as_tensor or is_tensor(old_global_expert_indices):
            return torch_module().from_numpy(phy2log)
        return phy2log


def plugin_enabled() -> bool:
    """Whether ``register`` replaces vLLM's default policy in this process."""
    flag = os.environ.get(PLUGIN_ENV, "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    listed = os.environ.get("VLLM_PLUGINS")
    return listed is not None and "eplb" in [p.strip() for p in listed.split(",")]


def register() -> None:
    """vLLM's general plugin: makes ``EplbPolicy`` the registry's default when enabled."""
    if not plugin_enabled():
        return
    try:
        from vllm.distributed.eplb import policy as registry
    except ImportError as e:
        logger.warning("eplb: vLLM's EPLB policy registry cannot be imported (%s); vLLM keeps its policy", e)
        return
    policies = getattr(registry, "EPLB_POLICIES", None)
    if not isinstance(policies, dict) or "default" not in policies:
        logger.warning("eplb: vLLM has no EPLB_POLICIES registry with a 'default' entry; vLLM keeps its policy")
        return
    if policies["default"] is not EplbPolicy:
        policies["default"] = EplbPolicy
        logger.info("eplb: vLLM's default EPLB policy is eplb's %s", EplbPolicy.policy_name())
