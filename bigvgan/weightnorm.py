"""Weight-normalised 1-D convolutions with the state-dict names of ``torch.nn.utils.weight_norm``.

Each layer keeps ``weight_g`` (the norm over every axis but 0, shaped ``(C0, 1, 1)``) and ``weight_v`` (the
direction) as the official NSF-BigVGAN file stores them, so that file loads as it is; ``fold()`` replaces the pair
by the plain ``weight`` they define (about as accurate, and faster). The generator and its CPU inference path
(``bigvgan.generator_cpu``) both read the effective weight through ``effective_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm_dim0(v: torch.Tensor) -> torch.Tensor:
    """L2 norm over every axis but 0, shaped ``(C0, 1, 1)`` (``norm_except_dim(v, 2, 0)``)."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).view(-1, *([1] * (v.dim() - 1)))


def apply_weight_norm(conv: nn.Module) -> None:
    """Replace ``conv.weight`` by the parameters ``weight_v`` (a copy) and ``weight_g`` (its norm over dim 0)."""
    weight = conv.weight.detach()
    del conv.weight
    conv.weight_v = nn.Parameter(weight.clone())
    conv.weight_g = nn.Parameter(norm_dim0(weight))


def effective_weight(conv: nn.Module) -> torch.Tensor:
    """``weight_g * weight_v / |weight_v|`` of a weight-normed layer, else its plain ``weight``."""
    if "weight_v" in conv._parameters:
        return conv.weight_v * (conv.weight_g / norm_dim0(conv.weight_v))
    return conv.weight


def fold_weight_norm(conv: nn.Module) -> None:
    """Turn a weight-normed layer back into a plain one holding its effective weight (nothing for a plain one)."""
    if "weight_v" not in conv._parameters:
        return
    weight = effective_weight(conv).detach()
    del conv.weight_v, conv.weight_g
    conv.weight = nn.Parameter(weight)


class WNConv1d(nn.Conv1d):
    """``nn.Conv1d`` with weight norm over output channels (dim 0); ``fold()`` turns it into a plain conv."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        apply_weight_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, effective_weight(self), self.bias)

    def fold(self) -> None:
        fold_weight_norm(self)


class WNConvTranspose1d(nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with weight norm over dim 0, which for a transposed conv is the INPUT channel axis."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        apply_weight_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(
            x, effective_weight(self), self.bias, self.stride, self.padding, self.output_padding, self.groups,
            self.dilation,
        )

    def fold(self) -> None:
        fold_weight_norm(self)
