"""The generator's CPU inference path: activations channels-last (``(B, L, C)``), resampling filters as shifted sums.

On CPU, mkldnn's depthwise convolutions are slow for BigVGAN's few-channel, very long signals (the 12-tap
anti-aliasing filters of a 5-channel, 640 000-sample stage run at ~5 GFLOPS), and its dense 1-D convolutions run
1.5-2.5x faster channels-last for 20-80 channels. So this path

- keeps every activation as ``(B, L, C)`` (a channels-last ``(B, C, 1, L)`` image for the convolutions);
- computes each anti-aliased SnakeBeta in its polyphase form: the 2x upsampling filter gives the even and odd
  output samples as two signals at the input rate, SnakeBeta runs on each, and the stride-2 low-pass filter is
  split into its even and odd taps over them. No interleaved 2x signal is ever built, and each FIR is a sum of
  shifted, scaled copies (one vectorised pass per tap over contiguous memory).

Same arithmetic as ``Generator.decode`` up to float rounding (tests/test_bigvgan.py compares the two); used for
float32 inference on CPU only (``Generator.fast_cpu``), never with autograd. ``(B, L, C)`` activations are called
NWC below (batch, width, channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bigvgan.alias import SnakeAlias, UpSample1d
from bigvgan.weightnorm import effective_weight
from common.derived import derived

__all__ = ["decode_cpu", "usable"]


def usable(x: torch.Tensor) -> bool:
    """Whether this path applies to ``x``: float32 on CPU with autograd off."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _fir_into(y: torch.Tensor, src: torch.Tensor, taps: list[tuple[int, float]], accumulate: bool) -> None:
    """``y (+)= sum_k w_k src[:, o_k : o_k + len(y)]`` along dim 1, one pass per tap."""
    n = y.shape[1]
    for k, (o, w) in enumerate(taps):
        if k == 0 and not accumulate:
            torch.mul(src[:, o: o + n], w, out=y)
        else:
            y.add_(src[:, o: o + n], alpha=w)


def _fir_padded(x: torch.Tensor, taps: list[tuple[int, float]], left: int, right: int, first: torch.Tensor,
                last: torch.Tensor, out: torch.Tensor | None = None, acc: bool = False) -> torch.Tensor:
    """FIR over ``P = [first] * left + x + [last] * right`` (along L of ``(B, L, C)``): ``y[i] = sum_k w_k P[i + o_k]``
    for i in [0, L), written to (``acc``: added to) ``out`` when given. P is never built: the interior reads ``x``
    directly and only the few edge samples go through a small padded copy (a full copy per filter cost more than
    the filter)."""
    length = x.shape[1]
    y = out if out is not None else x.new_empty(x.shape)
    offsets = [o for o, _ in taps]
    lo, hi = min(offsets), max(offsets)
    a, b = max(0, left - lo), min(length, length + left - hi)  # outputs whose taps all fall inside x
    if b - a < 4 * (hi - lo + 1):  # a short signal: pad it whole
        padded = torch.cat([first.expand(-1, left, -1), x, last.expand(-1, right, -1)], dim=1)
        _fir_into(y, padded, taps, acc)
        return y
    _fir_into(y[:, a:b], x, [(a + o - left, w) for o, w in taps], acc)
    if a > 0:
        head = torch.cat([first.expand(-1, left, -1), x[:, : a + hi - left]], dim=1)
        _fir_into(y[:, :a], head, taps, acc)
    if b < length:
        tail = torch.cat([x[:, b + lo - left:], last.expand(-1, hi - left, -1)], dim=1)
        _fir_into(y[:, b:], tail, [(o - lo, w) for o, w in taps], acc)
    return y


def polyphase_weights(up: UpSample1d, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int, int]:
    """``up`` in polyphase form: ``(w, d_min, d_max)`` with ``w`` ``(ratio, d_max - d_min + 1)`` such that output
    sample ``ratio * i + p`` of ``up(x)`` is ``sum_j w[p, j] x[i + j + d_min]`` (x replicate-padded).

    The transposed conv of the zero-stuffed input puts ``ratio * filter[t] * x[i + d]`` into output sample
    ``ratio * i + p`` for the taps t with ``(p + crop_left - t) % ratio == 0``, ``d = (p + crop_left - t) // ratio -
    pad``: each phase is an ordinary FIR over x (no interleaved 2x signal is needed to compute it)."""
    r = up.ratio
    taps = [(p, t, (p + up.crop_left - t) // r - up.pad)
            for p in range(r) for t in range(up.kernel_size) if (p + up.crop_left - t) % r == 0]
    d_min, d_max = min(d for _, _, d in taps), max(d for _, _, d in taps)
    f = up.filter.reshape(-1).to(dtype)
    w = f.new_zeros(r, d_max - d_min + 1)
    for p, t, d in taps:
        w[p, d - d_min] = r * f[t]
    return w, d_min, d_max


class _PolyphasePlan:
    """The FIR taps of one SnakeAlias in polyphase form (python floats, computed once per module)."""

    def __init__(self, act: SnakeAlias) -> None:
        up, low = act.upsample, act.downsample.lowpass
        r = up.ratio
        if low.stride != r:
            raise ValueError(f"the low-pass stride {low.stride} must equal the upsampling ratio {r}")
        w, d_min, d_max = polyphase_weights(up, torch.float64)  # phase p at i: sum_j w[p, j] x[i + j + d_min]
        self.up_pad = (-d_min, d_max)
        self.up_taps = [[(j, float(w[p, j])) for j in range(w.shape[1]) if w[p, j] != 0] for p in range(r)]
        # down: y[j] = sum_t f[t] u[r j + t - pad_left], u[m] = phase (m mod r) at index m // r
        f = low.filter.reshape(-1).double()
        by_phase: list[list[tuple[int, float]]] = [[] for _ in range(r)]
        for t in range(f.numel()):
            m = t - low.pad_left
            by_phase[m % r].append((m // r, float(f[t])))
        lo = min(o for taps in by_phase for o, _ in taps)
        hi = max(o for taps in by_phase for o, _ in taps)
        self.down_pad = (-lo, hi)
        self.down_taps = [[(o - lo, w_) for o, w_ in taps] for taps in by_phase]


def _plan(act: SnakeAlias) -> _PolyphasePlan:
    """The module's plan, made again whenever its filter buffers change (e.g. loaded from a file)."""
    return derived(act, "_nwc_plan", (act.upsample.filter, act.downsample.lowpass.filter),
                   lambda: _PolyphasePlan(act))


def snake_alias_nwc(act: SnakeAlias, x: torch.Tensor) -> torch.Tensor:
    """``act`` (upsample -> SnakeBeta -> low-pass downsample) on ``(B, L, C)`` -> ``(B, L, C)``."""
    plan = _plan(act)
    alpha = torch.exp(act.act.alpha)
    inv_beta = 1.0 / (torch.exp(act.act.beta) + 1e-9)
    first, last = x[:, :1], x[:, -1:]
    phases, s = [], None
    for taps in plan.up_taps:
        u = _fir_padded(x, taps, *plan.up_pad, first, last)
        s = torch.mul(u, alpha, out=s) if s is not None else u * alpha
        s.sin_().square_().mul_(inv_beta)
        phases.append(u.add_(s))
    # replicate padding of the interleaved signal: before it every sample is its first (phase 0, index 0), after it
    # its last (the last phase, index L - 1)
    first, last = phases[0][:, :1], phases[-1][:, -1:]
    y = s  # the scratch buffer becomes the output
    for k, (u, taps) in enumerate(zip(phases, plan.down_taps)):
        _fir_padded(u, taps, *plan.down_pad, first, last, out=y, acc=k > 0)
    return y


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """``(B, L, C)`` -> the same memory as a channels-last ``(B, C, 1, L)``."""
    return x.permute(0, 2, 1).unsqueeze(2)


def _from_image(y: torch.Tensor) -> torch.Tensor:
    """A ``(B, C, 1, L)`` conv output -> ``(B, L, C)`` (a view when channels-last)."""
    return y.squeeze(2).permute(0, 2, 1).contiguous()


def conv_nwc(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ``Conv1d`` (or weight-normed one) on ``(B, L, C)``, channels-last through mkldnn."""
    weight = effective_weight(conv).unsqueeze(2)
    y = F.conv2d(_as_image(x).contiguous(memory_format=torch.channels_last), weight, conv.bias,
                 stride=(1, conv.stride[0]), padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]))
    return _from_image(y)


def conv_transpose_nwc(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A (weight-normed) ``ConvTranspose1d`` on ``(B, L, C)``."""
    weight = effective_weight(conv).unsqueeze(2)
    y = F.conv_transpose2d(_as_image(x).contiguous(memory_format=torch.channels_last), weight, conv.bias,
                           stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                           output_padding=(0, conv.output_padding[0]), dilation=(1, conv.dilation[0]))
    return _from_image(y)


def amp_block_nwc(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    for i, (c1, c2) in enumerate(zip(block.convs1, block.convs2)):
        xt = conv_nwc(c1, snake_alias_nwc(block.activations[2 * i], x))
        xt = conv_nwc(c2, snake_alias_nwc(block.activations[2 * i + 1], xt))
        x = x + xt if i == 0 else x.add_(xt)  # the block's input belongs to the caller
    return x


def decode_cpu(gen: torch.nn.Module, mel: torch.Tensor, har_source: torch.Tensor) -> dict[str, torch.Tensor]:
    """``Generator.decode`` on this path: the same inputs and outputs."""
    x = gen.conv_pre(mel)
    conv_pre_out = x
    x = x.transpose(1, 2)
    x = x * torch.tanh(F.softplus(x))  # Mish
    source = har_source.contiguous()  # (B, 320 T, 1): channels-last already
    for i, (up, noise_conv) in enumerate(zip(gen.ups, gen.noise_convs)):
        x = conv_transpose_nwc(up, x).add_(conv_nwc(noise_conv, source))
        blocks = gen.resblocks[i * gen.num_kernels: (i + 1) * gen.num_kernels]
        xs = amp_block_nwc(blocks[0], x)
        for block in blocks[1:]:
            xs.add_(amp_block_nwc(block, x))
        x = xs.div_(gen.num_kernels)
    x = conv_nwc(gen.conv_post, snake_alias_nwc(gen.activation_post, x)).transpose(1, 2)
    return {"conv_pre_out": conv_pre_out, "conv_post_out": x, "audio": torch.tanh(x)}
