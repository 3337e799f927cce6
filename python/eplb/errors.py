"""The exceptions eplb raises.

The C++ core's errors arrive as these classes (the extension translates them):

- ``InvalidArgument`` (a ``ValueError``): bad input -- a shape the policy
  cannot serve, a malformed load, an unknown policy name;
- ``Error`` (a ``RuntimeError``): a failure in a layer that talks to other
  ranks or devices, with ``layer``, ``operation``, ``rank`` and ``peer``;
- ``TimeoutError`` (an ``Error`` and a builtin ``TimeoutError``): a deadline
  passed while waiting on a peer, the store or a device;
- ``CycleFailed`` (an ``Error``): a rebalance cycle that ended in failure,
  raised by ``Balancer.step()`` when the balancer was made with
  ``raise_on_failure=True`` (by default the balancer, like the C++ one, keeps
  the old placement and carries on; ``metrics()`` and ``on_cycle`` say why).
"""
import builtins
from typing import Any, Dict, Optional

__all__ = ["Error", "TimeoutError", "InvalidArgument", "CycleFailed"]


class Error(RuntimeError):
    """A failure in eplb's communication, store, device or runtime layers."""

    def __init__(self, message: str, layer: str = "", operation: str = "", rank: int = -1,
                 peer: int = -1) -> None:
        super().__init__(message)
        self.layer = layer
        self.operation = operation
        self.rank = rank
        self.peer = peer


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - eplb.TimeoutError on purpose
    """A deadline passed while waiting on a peer, a store or a device."""


class InvalidArgument(ValueError):
    """Bad input: the message names the argument and what is wrong with it."""


class CycleFailed(Error):
    """A rebalance cycle failed on this rank; ``report`` is its cycle report."""

    def __init__(self, report: Dict[str, Any], rank: int = -1) -> None:
        blamed = int(report.get("blamed_rank", -1))
        # The rank the balancer blames (its peers' blame notes, the process
        # watcher) can differ from the one the first error met: a survivor
        # that gave up on the dead rank closes its connections too.
        blame = f" (rank {blamed} blamed)" if blamed >= 0 else ""
        super().__init__(f"rebalance cycle {report.get('cycle')} failed on rank {rank}{blame}: "
                         f"{report.get('error', '')}", "balancer", "cycle", rank, blamed)
        self.report: Optional[Dict[str, Any]] = report
