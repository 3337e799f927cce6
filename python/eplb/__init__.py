"""eplb: expert-parallel load balancing for Mixture-of-Experts inference.

- ``rebalance_experts`` -- DeepSeek's EPLB signature over eplb's C++ policies
  (``policies()`` lists them);
- ``eplb.vllm.EplbPolicy`` -- vLLM's policy interface, and its plugin;
- ``eplb.sglang.rebalance_experts`` -- SGLang's algorithm interface;
- ``Balancer`` -- the online balancer over torch tensors;
- ``eplb.errors`` -- the exceptions (``InvalidArgument`` is a ``ValueError``).
"""
from . import _eplb
from .balancer import Balancer, Placement, launch_env
from .errors import CycleFailed, Error, InvalidArgument, TimeoutError
from .policy import policies, policy_description, rebalance_experts

__version__ = _eplb.__version__
built_with_cuda: bool = _eplb.built_with_cuda

__all__ = [
    "Balancer", "Placement", "launch_env",
    "CycleFailed", "Error", "InvalidArgument", "TimeoutError",
    "policies", "policy_description", "rebalance_experts",
    "built_with_cuda",
]
