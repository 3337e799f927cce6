"""Turning what callers pass (torch tensors, numpy arrays, nested lists) into
host numpy arrays for the extension, and its int64 arrays back into what the
caller passed (torch tensors for tensors, numpy arrays otherwise).

torch is never imported here: a tensor can only exist once torch is."""
import operator
import sys
from typing import Any, Tuple

import numpy as np

from .errors import InvalidArgument

_INT32_MAX = 2**31 - 1
MAX_THREADS = 1024  # as the C++ thread pool (LayerThreads::kMaxThreads)


def torch_module():
    """torch if it is imported already, else None."""
    return sys.modules.get("torch")


def is_tensor(x: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def host_array(x: Any, name: str) -> Tuple[np.ndarray, bool]:
    """(a numpy view or copy of x on the host, whether x was a torch tensor).

    Tensors on a device are copied to the host; CPU tensors are viewed, not
    copied, unless numpy has no such dtype (bfloat16: widened to float32,
    exactly). Complex numbers, strings and ragged lists are refused."""
    if is_tensor(x):
        t = x.detach()
        if t.is_complex():
            raise InvalidArgument(f"{name} is a complex tensor; eplb reads real numbers")
        if t.device.type != "cpu":
            t = t.cpu()
        try:
            return t.numpy(), True
        except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16, ...)
            return t.float().numpy(), True
    if isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except ValueError as e:  # ragged: numpy refuses inhomogeneous shapes
            raise InvalidArgument(f"{name} is a ragged nested list: {e}") from None
    else:
        raise InvalidArgument(
            f"{name} must be a torch tensor, a numpy array or a nested list, not {type(x).__name__}")
    if arr.dtype.kind not in "biuf":
        raise InvalidArgument(f"{name} holds {arr.dtype} values, not real numbers")
    return arr, False


def positive_int(value: Any, name: str, minimum: int = 1, maximum: int = _INT32_MAX) -> int:
    """value as an int in [minimum, maximum] (bool and floats refused)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an integer, not bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidArgument(f"{name} must be an integer, not {type(value).__name__} {value!r}") from None
    if v < minimum or v > maximum:
        raise InvalidArgument(f"{name} must be in [{minimum}, {maximum}], not {v}")
    return v


def like_input(arrays, as_tensor: bool):
    """The extension's arrays as torch tensors (sharing memory) or as they are."""
    if not as_tensor:
        return arrays
    torch = torch_module()
    return tuple(None if a is None else torch.from_numpy(a) for a in arrays)
