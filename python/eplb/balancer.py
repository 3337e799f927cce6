"""The online balancer over torch tensors (include/eplb/balancer.h).

An engine makes one ``Balancer`` per rank with its MoE layers' expert weights
-- per layer, one or more tensors whose first dimension is this rank's slots
(``num_slots / world_size`` experts), on the CPU or one CUDA device -- then
every step records each layer's load (``record_load`` with host counts, or
``record_topk`` with the router's top-k ids on the GPU) and calls ``step()``.
Every ``step_interval`` steps the ranks sum their load windows, run the
policy with the placement in force as the previous one, and move expert
weights between them into the same tensors, which the balancer registers by
address (``data_ptr``): they are never copied, and it holds them until it is
closed. ``placement()`` gives the maps to route with.

The run's ranks find each other as the C++ bootstrap does (bootstrap.h):
``RANK``, ``WORLD_SIZE`` (torchrun's), and a store named by ``EPLB_STORE``
(``file:DIR`` or ``redis://HOST[:PORT]``) or ``MASTER_ADDR``/``MASTER_PORT``
(a Redis server there); keyword arguments override them. A single process
with no store gets a file store in a temporary directory.

Every cross-rank wait has a deadline (``deadline_ms``; connecting,
``connect_timeout_ms``), and blocking calls release the GIL. A rank that dies
or stalls makes the others abandon the cycle with the old placement intact;
``step()`` then raises ``eplb.CycleFailed`` when ``raise_on_failure`` is set,
and otherwise carries on (``metrics()`` and ``on_cycle`` tell).
"""
import shutil
import tempfile
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from . import _eplb
from ._convert import MAX_THREADS, host_array, is_tensor, positive_int, torch_module
from .errors import CycleFailed, InvalidArgument

__all__ = ["Balancer", "Placement", "launch_env"]


class Placement(NamedTuple):
    """The maps to route with: int64, torch tensors (numpy arrays without torch)."""
    phy2log: Any  # [layers, num_slots]: logical expert of each slot
    log2phy: Any  # [layers, num_experts, max replicas]: each expert's slots, ascending, -1 padded
    logcnt: Any   # [layers, num_experts]: replicas of each expert


def _env_overrides(rank: Optional[int], world_size: Optional[int], run_id: Optional[str]) -> Dict[str, str]:
    env = {}
    if rank is not None:
        env["RANK"] = str(positive_int(rank, "rank", minimum=0))
    if world_size is not None:
        env["WORLD_SIZE"] = str(positive_int(world_size, "world_size"))
    if run_id is not None:
        env["EPLB_RUN_ID"] = str(run_id)
    return env


def launch_env(rank: Optional[int] = None, world_size: Optional[int] = None,
               run_id: Optional[str] = None) -> Dict[str, Any]:
    """The launch environment as the balancer reads it (RANK, WORLD_SIZE, ...)."""
    return _eplb.launch_env(_env_overrides(rank, world_size, run_id))


def _tensor_spec(t: Any, where: str):
    """(address, bytes per expert, bytes between experts, experts, device) of one
    weight tensor: a torch tensor or numpy array whose first dimension is the
    slots and whose every expert (t[i]) is contiguous."""
    if is_tensor(t):
        if t.dim() < 1 or t.shape[0] < 1:
            raise InvalidArgument(f"{where}: a tensor of shape {tuple(t.shape)} holds no experts")
        inner = t[0]
        if not inner.is_contiguous() or t.stride(0) < 0:
            raise InvalidArgument(f"{where}: each expert (t[i]) must be contiguous; strides {t.stride()}")
        size = t.element_size()
        device = t.device.index if t.device.type == "cuda" else -1
        if t.device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"{where}: tensors on {t.device} are not supported (CPU or CUDA)")
        if device is None:
            device = torch_module().cuda.current_device()
        return (t.data_ptr(), inner.numel() * size, t.stride(0) * size, t.shape[0], device)
    if isinstance(t, np.ndarray):
        if t.ndim < 1 or t.shape[0] < 1:
            raise InvalidArgument(f"{where}: an array of shape {t.shape} holds no experts")
        if not t[0].flags.c_contiguous or t.strides[0] < 0 or not t.flags.writeable:
            raise InvalidArgument(f"{where}: each expert (a[i]) must be contiguous and writeable")
        return (t.ctypes.data, t[0].nbytes, t.strides[0], t.shape[0], -1)
    raise InvalidArgument(f"{where} must be a torch tensor or numpy array, not {type(t).__name__}")


class Balancer:
    """One rank's online balancer; collective: every rank constructs it alike."""

    def __init__(self, weights: Sequence[Any], *, num_experts: int, num_slots: int, num_groups: int = 1,
                 num_nodes: int = 1, ranks_per_node: int = 0, policy: str = "deepseek", mode: str = "async",
                 window_steps: int = 100, step_interval: int = 1000, first_rebalance_step: int = 0,
                 last_rebalance_step: int = 0, deadline_ms: int = 5000, connect_timeout_ms: int = 30000, commit_lead_steps: int = 4,
                 staging_layers: int = 2, name: str = "balancer", policy_threads: int = 0,
                 communicator: Optional[str] = None, initial: Optional[Any] = None,
                 store: Optional[str] = None, rank: Optional[int] = None, world_size: Optional[int] = None,
                 run_id: Optional[str] = None,
                 on_commit: Optional[Callable[[Dict[str, Any]], None]] = None,
                 on_cycle: Optional[Callable[[Dict[str, Any]], None]] = None,
                 raise_on_failure: bool = False) -> None:
        """``weights[l]``: layer l's tensor, or a list of its tensors (w1, w2, ...), each
        [slots_per_rank, ...]. The BalancerConfig fields are keyword arguments (times in
        milliseconds); ``initial`` is the placement the weights hold now ([layers, num_slots]
        phy2log; default: identity, slot p holds expert p % num_experts)."""
        self._cpp = None
        self._tmp_store: Optional[str] = None
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) == 0:
            raise InvalidArgument("weights must be a non-empty sequence with one entry per MoE layer")
        layers: List[List[Any]] = [list(w) if isinstance(w, (list, tuple)) else [w] for w in weights]
        specs = [[_tensor_spec(t, f"weights[{l}][{i}]") for i, t in enumerate(ts)] for l, ts in enumerate(layers)]
        if not isinstance(mode, str) or mode not in ("async", "sync"):
            raise InvalidArgument(f"mode must be 'async' or 'sync', not {mode!r}")
        if not isinstance(policy, str) or not isinstance(name, str):
            raise InvalidArgument("policy and name must be strings")
        config = {
            "num_experts": positive_int(num_experts, "num_experts"),
            "num_slots": positive_int(num_slots, "num_slots"),
            "num_groups": positive_int(num_groups, "num_groups"),
            "num_nodes": positive_int(num_nodes, "num_nodes"),
            "ranks_per_node": positive_int(ranks_per_node, "ranks_per_node", minimum=0),
            "policy": policy, "mode": mode,
            "window_steps": positive_int(window_steps, "window_steps"),
            "step_interval": positive_int(step_interval, "step_interval"),
            "first_rebalance_step": positive_int(first_rebalance_step, "first_rebalance_step", minimum=0),
            "last_rebalance_step": positive_int(last_rebalance_step, "last_rebalance_step", minimum=0),
            "deadline_ms": positive_int(deadline_ms, "deadline_ms"),
            "connect_timeout_ms": positive_int(connect_timeout_ms, "connect_timeout_ms"),
            "commit_lead_steps": positive_int(commit_lead_steps, "commit_lead_steps"),
            "staging_layers": positive_int(staging_layers, "staging_layers"),
            "name": name,
            "policy_threads": positive_int(policy_threads, "policy_threads", minimum=0, maximum=MAX_THREADS),
        }
        env = _env_overrides(rank, world_size, run_id)
        launch = _eplb.launch_env(env)
        if store is None and launch["world_size"] == 1 and not launch["store_spec"] and not launch["master_addr"]:
            self._tmp_store = tempfile.mkdtemp(prefix="eplb-store-")
            store = "file:" + self._tmp_store
        init = None if initial is None else host_array(initial, "initial")[0]
        self._user_on_commit = on_commit
        self._user_on_cycle = on_cycle
        self._raise_on_failure = bool(raise_on_failure)
        self._failed: List[Dict[str, Any]] = []
        try:
            self._cpp = _eplb.Balancer(specs, config, env, store or "", communicator or "", init, layers)
        except BaseException:
            self._remove_tmp_store()
            raise
        # The extension holds the callbacks; through a weak reference, so
        # that it does not keep this object alive (a cycle the garbage
        # collector cannot see into).
        me = weakref.ref(self)
        self._cpp.set_on_commit(lambda event: me() is not None and me()._on_commit(event))
        self._cpp.set_on_cycle(lambda report: me() is not None and me()._on_cycle(report))
        self.num_layers = len(layers)
        self.num_experts = config["num_experts"]
        self.num_slots = config["num_slots"]

    # --- callbacks (the engine thread, inside step()) ---------------------
    def _on_commit(self, event: Dict[str, Any]) -> None:
        if self._user_on_commit is not None:
            self._user_on_commit(event)

    def _on_cycle(self, report: Dict[str, Any]) -> None:
        if not report["ok"]:
            self._failed.append(report)
        if self._user_on_cycle is not None:
            self._user_on_cycle(report)

    def set_on_commit(self, f: Optional[Callable[[Dict[str, Any]], None]]) -> None:
        """f(event) after each layer's commit on this rank, inside step()."""
        self._user_on_commit = f

    def set_on_cycle(self, f: Optional[Callable[[Dict[str, Any]], None]]) -> None:
        """f(report) after each rebalance cycle ends (ok or not), inside step()."""
        self._user_on_cycle = f

    # --- the engine's calls ------------------------------------------------
    def _live(self):
        if self._cpp is None or self._cpp.closed():
            raise InvalidArgument("balancer: closed")
        return self._cpp

    def _stream(self) -> int:
        device = self._live().device()
        if device < 0:
            return 0
        return torch_module().cuda.current_stream(device).cuda_stream

    def record_load(self, layer: int, counts: Any) -> None:
        """Adds one step's token counts of ``layer``, one per logical expert
        (integers; a tensor on a device is copied to the host)."""
        arr, _ = host_array(counts, "counts")
        if arr.dtype.kind not in "biu":
            raise InvalidArgument(f"counts must be integers, not {arr.dtype}")
        self._live().record_load(positive_int(layer, "layer", minimum=0), arr)

    def record_topk(self, layer: int, topk_ids: Any, physical_ids: Optional[Any] = None) -> None:
        """Counts one layer's router choices on the GPU (``topk_ids`` [tokens, k],
        int32 or int64, on this balancer's CUDA device) on torch's current
        stream; writes the chosen slots into ``physical_ids`` (int32, same
        shape) when given. Needs weights on a CUDA device and a CUDA build."""
        cpp = self._live()
        torch = torch_module()
        if not is_tensor(topk_ids) or topk_ids.device.type != "cuda":
            raise InvalidArgument("record_topk: topk_ids must be a CUDA tensor (host counts go to record_load)")
        if cpp.device() < 0:
            raise InvalidArgument("record_topk: the balancer's weights are in host memory; "
                                  "it counts top-k ids only with weights on a CUDA device")
        if topk_ids.device.index != cpp.device():
            raise InvalidArgument(f"record_topk: topk_ids are on {topk_ids.device}, the balancer on cuda:{cpp.device()}")
        if topk_ids.dim() != 2 or topk_ids.dtype not in (torch.int32, torch.int64) or not topk_ids.is_contiguous():
            raise InvalidArgument("record_topk: topk_ids must be a contiguous [tokens, k] int32 or int64 tensor, "
                                  f"got {tuple(topk_ids.shape)} {topk_ids.dtype}")
        out = 0
        if physical_ids is not None:
            if (not is_tensor(physical_ids) or physical_ids.device != topk_ids.device
                    or physical_ids.dtype != torch.int32 or physical_ids.shape != topk_ids.shape
                    or not physical_ids.is_contiguous()):
                raise InvalidArgument("record_topk: physical_ids must be a contiguous int32 tensor shaped and "
                                      "placed like topk_ids")
            out = physical_ids.data_ptr()
        cpp.record_topk(positive_int(layer, "layer", minimum=0), topk_ids.data_ptr(),
                        topk_ids.dtype == torch.int64, topk_ids.shape[0], topk_ids.shape[1], self._stream(), out)

    def step(self) -> None:
        """Once per engine step: closes the step's loads into the window, commits
        a staged layer whose agreed step this is, starts a cycle when one is due
        (sync mode: runs it). The GIL is released; waits are bounded by the
        deadline. Raises ``CycleFailed`` for a failed cycle when
        ``raise_on_failure`` is set, and what a callback raised."""
        self._live().step(self._stream())
        if self._failed:
            failed, self._failed = self._failed[0], []
            if self._raise_on_failure:
                raise CycleFailed(failed, self._cpp.rank())

    # --- what it reports ---------------------------------------------------
    def placement(self) -> Placement:
        """The maps as of the last commit (any thread)."""
        arrays = self._live().placement()
        torch = torch_module()
        if torch is not None:
            arrays = tuple(torch.from_numpy(a) for a in arrays)
        return Placement(*arrays)

    def window_load(self) -> Any:
        """This rank's load window summed over its steps, [layers, experts] (float64)."""
        w = self._live().window_load()
        torch = torch_module()
        return torch.from_numpy(w) if torch is not None else w

    def metrics(self) -> Dict[str, Any]:
        """BalancerMetrics as a dict (last_cycle: the last cycle's report)."""
        return self._live().metrics()

    def prometheus_text(self) -> str:
        """The metrics in Prometheus' text format (eplb_* with label rank)."""
        return self._live().prometheus_text()

    def metrics_line(self) -> str:
        return self._live().metrics_line()

    @property
    def steps(self) -> int:
        """Step() calls so far."""
        return self._live().step_count()

    def idle(self) -> bool:
        """No cycle running or staged."""
        return self._live().idle()

    @property
    def rank(self) -> int:
        return self._live().rank()

    @property
    def world_size(self) -> int:
        return self._live().world_size()

    @property
    def device(self) -> int:
        """The weights' CUDA device, -1 for host memory."""
        return self._live().device()

    # --- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Stops the balancer (a wait in progress ends at its deadline at the
        latest) and lets go of the weights; layers not committed keep their
        placement. Idempotent."""
        if self._cpp is not None:
            self._cpp.close()
            self._cpp = None
        self._remove_tmp_store()

    def _remove_tmp_store(self) -> None:
        if self._tmp_store is not None:
            shutil.rmtree(self._tmp_store, ignore_errors=True)
            self._tmp_store = None

    def __enter__(self) -> "Balancer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
