"""Values derived from tensors (a weight-normed kernel, a reshaped kernel, filter taps), kept until a source changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def derived(owner: object, name: str, sources: tuple[torch.Tensor, ...], make: Callable[[], T]) -> T:
    """``make()``, kept in ``owner.__dict__[name]`` (never module state: not saved, not moved) and made again only
    when one of ``sources`` is replaced, updated in place (its version counter), moved or cast."""
    key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in sources)
    cached = owner.__dict__.get(name)
    if cached is None or cached[0] != key:
        cached = owner.__dict__[name] = (key, make())
    return cached[1]
