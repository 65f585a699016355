"""Anti-aliased periodic activation of BigVGAN: 2x upsample -> SnakeBeta -> 2x low-pass downsample.

Lee et al., "BigVGAN: A Universal Neural Vocoder with Large-Scale Training" (2023), section 3.2; the resampling
filters follow alias-free-torch / NVIDIA BigVGAN (Kaiser-windowed sinc, 12 taps, cutoff 0.25 and half width 0.3 of
the doubled rate, replicate padding). State-dict keys match the official NSF-BigVGAN file:
``<name>.act.alpha``, ``<name>.act.beta`` (log-scale), ``<name>.upsample.filter`` and
``<name>.downsample.lowpass.filter`` (constant ``[1, 1, 12]`` buffers, accepted from the file).

All modules take and return ``(B, C, T)`` at the rate of their input.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Low-pass FIR ``[1, 1, kernel_size]`` (sum 1): sinc at ``cutoff`` (cycles/sample) under a Kaiser window.

    The window's beta follows Kaiser's formula for a transition band of ``4 * half_width`` (as julius /
    alias-free-torch compute it); even kernels are centred between two taps.
    """
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    if kernel_size % 2 == 0:
        t = torch.arange(-half, half) + 0.5
    else:
        t = torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (taps / taps.sum()).view(1, 1, kernel_size)


def replicate_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``F.pad(x, (left, right), mode="replicate")`` on the last axis; the concatenation is 2-3x faster on CPU."""
    return torch.cat([x[..., :1].expand(*x.shape[:-1], left), x, x[..., -1:].expand(*x.shape[:-1], right)], dim=-1)


class UpSample1d(nn.Module):
    """``(B, C, T)`` -> ``(B, C, ratio * T)``: zero-stuffing + low-pass ``filter``, replicate edges.

    The original computes ``ratio * conv_transpose1d(replicate_pad(x, pad), filter, stride=ratio)`` and crops
    ``crop_left`` / ``crop_right`` samples. Here the same sum is split into its ``ratio`` polyphase branches, each an
    ordinary depthwise conv over ``x`` (on CPU a depthwise transposed conv is ~6x slower than a depthwise conv).
    """

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = kernel_size
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))
        # output sample ratio * i + phase = ratio * sum of filter[t] * x[i + d] over the taps t with
        # (phase + crop_left - t) % ratio == 0, where d = (phase + crop_left - t) // ratio - pad
        taps = [
            (phase, t, (phase + self.crop_left - t) // ratio - self.pad)
            for phase in range(ratio) for t in range(kernel_size) if (phase + self.crop_left - t) % ratio == 0
        ]
        self._d_min = min(d for _, _, d in taps)
        self._d_max = max(d for _, _, d in taps)
        self._phase_of_tap = [phase for phase, _, _ in taps]
        self._tap = [t for _, t, _ in taps]
        self._pos_of_tap = [d - self._d_min for _, _, d in taps]

    def polyphase_weights(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(ratio, d_max - d_min + 1)``: row ``phase`` is the FIR producing output samples ``ratio * i + phase``."""
        f = self.filter.reshape(-1).to(dtype)
        w = f.new_zeros(self.ratio, self._d_max - self._d_min + 1)
        w[self._phase_of_tap, self._pos_of_tap] = self.ratio * f[self._tap]
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        xp = replicate_pad(x, -self._d_min, self._d_max)
        w = self.polyphase_weights(x.dtype)
        out = x.new_empty(batch, channels, length, self.ratio)
        for phase in range(self.ratio):
            out[..., phase] = F.conv1d(xp, w[phase].view(1, 1, -1).expand(channels, -1, -1), groups=channels)
        return out.view(batch, channels, length * self.ratio)


class LowPassFilter1d(nn.Module):
    """Depthwise FIR low-pass with replicate padding and a stride: ``(B, C, T)`` -> ``(B, C, T // stride)``."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int = 12) -> None:
        super().__init__()
        self.stride = stride
        even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(even)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = replicate_pad(x, self.pad_left, self.pad_right)
        return F.conv1d(x, self.filter.to(x.dtype).expand(channels, -1, -1), stride=self.stride, groups=channels)


class DownSample1d(nn.Module):
    """``(B, C, ratio * T)`` -> ``(B, C, T)`` through ``lowpass`` (the state-dict name of the original)."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """``x + sin(alpha x)^2 / beta`` per channel, with ``alpha = exp(self.alpha)``, ``beta = exp(self.beta)``.

    BigVGAN's SnakeBeta with log-scale parameters (initialised to 0, i.e. alpha = beta = 1); ``1e-9`` keeps the
    division finite as in the original.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)[None, :, None].to(x.dtype)
        inv_beta = (1.0 / (torch.exp(self.beta)[None, :, None] + 1e-9)).to(x.dtype)
        if torch.is_grad_enabled():
            return x + inv_beta * torch.sin(x * alpha).pow(2)
        # inference: one temporary instead of four (measured ~30% faster on CPU for long signals)
        out = x * alpha
        out.sin_().square_().mul_(inv_beta).add_(x)
        return out


class SnakeAlias(nn.Module):
    """Anti-aliased SnakeBeta: ``(B, C, T)`` -> ``(B, C, T)``, the activation runs at ``ratio`` times the rate."""

    def __init__(self, channels: int, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample1d(ratio, kernel_size)
        self.downsample = DownSample1d(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))
