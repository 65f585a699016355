"""U-Net estimator of the decoder (Grad-TTS ``GradLogPEstimator2d``): the score (V2) or velocity (V3) field.

Input x, mu [B, n_mels, T] (T a multiple of 4), mask [B, 1, T], speaker embedding [B, n_embs], time t [B] or 0-d
in [0, 1]; output [B, n_mels, T] (masked). The mel is treated as a one-channel image [B, C, n_mels, T]: channels
96 -> 192 -> 384 at full, half and quarter resolution, linear attention and Rezero gates at every level.
Submodule names follow the official checkpoint (``decoder.estimator.*``).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from common.derived import derived

log = logging.getLogger(__name__)

DIM_MULTS = (1, 2, 4)
GROUPS = 8
ATTN_HEADS = 4
ATTN_HEAD_DIM = 32


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


_MISH_BLOCK = 1 << 18  # elements per pass: the block and its temporary (1 MiB each) stay in a core's L2 cache


def mish_(x: torch.Tensor) -> torch.Tensor:
    """In-place Mish. On CPU in float32 as ``x - 2x / ((1 + e^x)^2 + 1)``, the same function as x tanh(softplus(x))
    (tanh(log v) = (v^2 - 1) / (v^2 + 1) with v = 1 + e^x) with one exponential instead of three transcendental
    functions, in cache-sized blocks: about 3x faster than ``F.mish`` on AVX2 CPUs, absolute difference within
    ~2e-7 |x| (+inf in gives NaN; GroupNorm outputs never get there). Elsewhere (and for non-contiguous x)
    ``F.mish``."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.is_contiguous():
        return F.mish(x, inplace=True)
    flat = x.view(-1)
    buf = x.new_empty(min(flat.numel(), _MISH_BLOCK))
    for start in range(0, flat.numel(), _MISH_BLOCK):
        xb = flat[start:start + _MISH_BLOCK]
        v = buf[: xb.numel()]
        torch.exp(xb, out=v)
        v.add_(1).square_().add_(1)
        xb.addcdiv_(xb, v, value=-2)
    return x


def _inplace() -> bool:
    """Intermediate tensors may be overwritten when no autograd graph is recorded (inference): fewer allocations."""
    return not torch.is_grad_enabled()


_NNPACK: bool | None = None


def nnpack_available() -> bool:
    """True when this torch build has NNPACK (the call also initialises it; later calls fail without it)."""
    global _NNPACK
    if _NNPACK is None:
        _NNPACK = bool(torch.backends.nnpack.is_available())
    return _NNPACK


def winograd_ok(x: torch.Tensor) -> bool:
    """Whether the Winograd (NNPACK) path applies: inference on CPU in float32, NNPACK in this build."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and nnpack_available())


def conv3x3(conv: nn.Conv2d, x: torch.Tensor, winograd: bool) -> torch.Tensor:
    """A 3x3 stride-1 convolution; with ``winograd`` through NNPACK's fast (Winograd-transform) convolution, about 2x
    faster than mkldnn on AVX2 CPUs with ~1e-5 relative difference in float32, output channels-first (a 3-channel
    input as one GEMM over its patches instead); else the module itself."""
    if winograd and x.shape[1] < 8:  # the 3-channel input: one GEMM over the 3x3 patches (mkldnn: ~2x slower)
        b, _, h, w = x.shape
        cols = F.unfold(x, 3, padding=1)  # [B, C_in * 9, F * T]
        return matmul_items(conv.weight.flatten(1), cols, conv.bias).view(b, -1, h, w)
    y = conv3x3_weights(x, conv.weight, conv.bias) if winograd else None
    return conv(x) if y is None else y


def conv3x3_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """NNPACK's 3x3 stride-1 convolution (padding 1), channels-first output; None after NNPACK refused a call
    (the caller then uses the standard convolution, as from then on does every call)."""
    global _NNPACK
    if not _NNPACK:
        return None
    try:
        x = x.contiguous()
        if x.shape[0] == 1:
            return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1])
        # one item at a time: NNPACK's batched algorithm was 2-4x slower per item than its single-image one here
        return torch.cat([torch._nnpack_spatial_convolution(x[i: i + 1], weight, bias, [1, 1], [1, 1])
                          for i in range(x.shape[0])])
    except RuntimeError as exc:  # an NNPACK refusal (shape, memory): plain convolutions from now on
        log.warning("NNPACK convolution failed (%s); using the standard convolutions", exc)
        _NNPACK = False
        return None


def matmul_items(weight: torch.Tensor, x3: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` [O, K] (shared) or [B, O, K] (per item) times ``x3`` [B, K, N], plus ``bias`` [O] -> [B, O, N], one
    matrix product per item (torch.matmul would transpose-copy a broadcast [B, K, N] operand)."""
    y = x3.new_empty(x3.shape[0], weight.shape[-2], x3.shape[-1])
    for i in range(x3.shape[0]):
        w = weight if weight.dim() == 2 else weight[i]
        if bias is None:
            torch.mm(w, x3[i], out=y[i])
        else:
            torch.addmm(bias[:, None], w, x3[i], out=y[i])
    return y


def conv1x1(conv: nn.Module, x: torch.Tensor, winograd: bool) -> torch.Tensor:
    """A 1x1 convolution (or Identity); on the channels-first Winograd path as one matrix product per item
    (mkldnn's channels-first 1x1 kernels are about 2x slower than the GEMM here)."""
    if not winograd or not isinstance(conv, nn.Conv2d):
        return conv(x)
    b, _, h, w = x.shape
    return matmul_items(conv.weight.flatten(1), x.reshape(b, -1, h * w), conv.bias).view(b, -1, h, w)


class Block(nn.Module):
    """conv 3x3 -> GroupNorm(8) -> Mish, input and output masked. [B, C_in, F, T] -> [B, C_out, F, T].

    ``mask`` None means all frames valid (multiplying by ones is skipped: the same numbers, fewer passes)."""

    def __init__(self, dim: int, dim_out: int, groups: int = GROUPS):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, winograd: bool = False) -> torch.Tensor:
        conv, norm, _ = self.block
        h = norm(conv3x3(conv, x if mask is None else x * mask, winograd))
        if _inplace():
            h = mish_(h) if winograd else F.mish(h, inplace=True)
            return h if mask is None else h.mul_(mask)
        h = F.mish(h)
        return h if mask is None else h * mask


class ResnetBlock(nn.Module):
    """Two Blocks with the time embedding added in between, plus a (1x1 conv) residual."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = GROUPS):
        super().__init__()
        self.mlp = nn.Sequential(Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, time_emb: torch.Tensor,
                winograd: bool = False) -> torch.Tensor:
        temb = self.mlp(time_emb)[:, :, None, None]
        xm = x if mask is None else x * mask
        if _inplace():
            h = self.block2(self.block1(x, mask, winograd).add_(temb), mask, winograd)
            return h.add_(conv1x1(self.res_conv, xm, winograd))
        h = self.block2(self.block1(x, mask, winograd) + temb, mask, winograd)
        return h + conv1x1(self.res_conv, xm, winograd)


class LinearAttention(nn.Module):
    """Linear attention over all F x T positions (softmax over key positions, no scaling). [B, C, F, T] -> same."""

    def __init__(self, dim: int, heads: int = ATTN_HEADS, dim_head: int = ATTN_HEAD_DIM):
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qkv = self.to_qkv(x).flatten(2)  # [B, 3 * heads * d, N] (a view also for channels-last input)
        q, k, v = qkv.unflatten(1, (3, self.heads, -1)).unbind(1)  # each [B, heads, d, N]
        k = k.softmax(dim=-1)
        context = torch.matmul(k, v.transpose(-1, -2))  # [B, heads, d_k, d_v]
        out = torch.matmul(q.transpose(-1, -2), context)  # [B, heads, N, d_v]
        # [B, N, heads * d_v] viewed as a channels-last image: no copy back to channels-first
        out = out.transpose(1, 2).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.to_out(out)

    def residual_inference(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``x + gate * self(x)`` for channels-first x without autograd, in fewer operations: the query and output
        projections enter only linearly, so to_out(context^T q) + x = (gate Wo C^T Wq + I) x + gate bo with a
        [C, C] matrix per item (C^T block-diagonal over heads). Equal to the plain forward up to float rounding;
        skips the query projection and the [heads * d, F * T] product."""
        b, c, h, w = x.shape
        hidden = self.to_out.weight.shape[1]
        x3 = x.reshape(b, c, h * w)
        w_q, w_kv = self.to_qkv.weight.flatten(1).split([hidden, 2 * hidden])
        kv = matmul_items(w_kv, x3)
        k, v = kv.unflatten(1, (2, self.heads, -1)).unbind(1)  # each [B, heads, d, N]
        context = torch.matmul(k.softmax(dim=-1), v.transpose(-1, -2))  # [B, heads, d_k, d_v]
        # (C^T Wq) per head: [B, heads, d_v, C] -> [B, heads * d_v, C]; then Wo (C^T Wq) [B, C, C]
        cq = torch.matmul(context.transpose(-1, -2), w_q.view(self.heads, -1, c)).flatten(1, 2)
        mat = torch.matmul(self.to_out.weight.flatten(1), cq).mul_(gate)
        mat.diagonal(dim1=-2, dim2=-1).add_(1)
        return matmul_items(mat, x3, self.to_out.bias * gate).view(b, c, h, w)


class Rezero(nn.Module):
    """fn(x) * g with a scalar gate g (initialised to 0)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.g = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(x)
        return y.mul_(self.g) if _inplace() else y * self.g


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(x)
        return y.add_(x) if _inplace() else y + x


def attend(block: Residual, x: torch.Tensor, winograd: bool) -> torch.Tensor:
    """One attention level of the U-Net, ``Residual(Rezero(LinearAttention))``: on the Winograd path the gated
    attention and its residual folded into one matrix product (``LinearAttention.residual_inference``)."""
    if winograd:
        gated = block.fn
        return gated.fn.residual_inference(x, gated.g)
    return block(x)


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# The transposed convolution (k4, s2, p1) as a 3x3 convolution with 4 output phases: output row 2m + a takes input
# rows m - 1, m (a = 0: kernel rows 3, 1) or m, m + 1 (a = 1: kernel rows 2, 0); the same for columns.
_PHASE_TAPS = {(0, 0): 3, (0, 1): 1, (1, 1): 2, (1, 2): 0}  # (phase, 3x3 row) -> row of the 4x4 kernel


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim, dim, 4, 2, 1)

    def _phase_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[C_out * 4, C_in, 3, 3] (channels ordered (out, row phase, column phase)) and the bias repeated to match;
        recomputed only when the parameters change."""
        wt, bias = self.conv.weight, self.conv.bias

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            c_in, c_out = wt.shape[:2]
            k = wt.new_zeros(c_out, 2, 2, c_in, 3, 3)
            for (a, py), ky in _PHASE_TAPS.items():
                for (b, px), kx in _PHASE_TAPS.items():
                    k[:, a, b, :, py, px] = wt[:, :, ky, kx].t()
            return k.reshape(c_out * 4, c_in, 3, 3), bias.repeat_interleave(4)

        return derived(self, "_phase_cache", (wt, bias), make)

    def forward(self, x: torch.Tensor, winograd: bool = False) -> torch.Tensor:
        if winograd:  # sub-pixel form through the Winograd 3x3 path: ~25% faster than mkldnn's
            y = conv3x3_weights(x, *self._phase_weights())
            if y is not None:
                return F.pixel_shuffle(y, 2)
        return self.conv(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """t [B] -> [B, dim]: [sin, cos] of scale * t * exp(-ln(1e4) i / (dim/2 - 1)); frequencies in float32 as the
    original (``.float()``), so a float64 t is multiplied by float32-rounded frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    args = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((args.sin(), args.cos()), dim=-1)


class UNetEstimator(nn.Module):
    """The decoder's 2-D U-Net over [mu, x, speaker map] stacked as 3 image channels (see module docstring)."""

    def __init__(self, dim: int, n_mels: int = 100, emb_dim: int = 64, pe_scale: float = 1000):
        super().__init__()
        self.dim = dim
        self.pe_scale = pe_scale
        # activations in channels-last layout: mkldnn's 3x3 convolutions run faster on CPU (measured, see README)
        self.channels_last = True
        # inference on CPU: 3x3 convolutions through NNPACK's Winograd transform, activations channels-first
        self.winograd = True
        self.spk_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim * 4), Mish(), nn.Linear(emb_dim * 4, n_mels))
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))
        dims = [3, *(dim * m for m in DIM_MULTS)]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()  # registered before the middle blocks: the official key order
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(d_in, d_out, dim),
                ResnetBlock(d_out, d_out, dim),
                Residual(Rezero(LinearAttention(d_out))),
                nn.Identity() if last else Downsample(d_out),
            ]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, dim)
        self.mid_attn = Residual(Rezero(LinearAttention(mid)))
        self.mid_block2 = ResnetBlock(mid, mid, dim)
        for d_in, d_out in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResnetBlock(d_out * 2, d_in, dim),
                ResnetBlock(d_in, d_in, dim),
                Residual(Rezero(LinearAttention(d_in))),
                Upsample(d_in),
            ]))
        self.final_block = Block(dim, dim)
        self.final_conv = nn.Conv2d(dim, 1, 1)

    def time_embedding(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """t [B] or 0-d -> [B, dim] (sinusoid + MLP)."""
        if t.dim() == 0:
            t = t.expand(batch)
        return self.mlp(sinusoidal_embedding(t, self.dim, self.pe_scale))

    def forward(self, spk: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """spk [B, emb_dim], x [B, n_mels, T], mask [B, 1, T], mu [B, n_mels, T], t [B] or 0-d -> [B, n_mels, T]."""
        t_emb = self.time_embedding(t, x.shape[0])
        s = self.spk_mlp(spk).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        h = torch.stack([mu, x, s], 1)
        winograd = self.winograd and winograd_ok(h)
        if self.channels_last and not winograd:
            h = h.contiguous(memory_format=torch.channels_last)
        # the mask of each resolution [B, 1, 1, T / 2^i]; None where every frame is valid (one whole utterance or
        # a full window): the products are skipped (x * 1 == x exactly). Checked on CPU only, where it costs
        # nothing (on CUDA it would synchronise every call).
        full = not torch.is_grad_enabled() and mask.device.type == "cpu" and bool(mask.min() > 0)
        levels = [None if full else mask.unsqueeze(1)[..., :: 2**i] for i in range(len(self.downs))]

        def masked(v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
            return v if m is None else v * m

        skips = []
        for (resnet1, resnet2, attn, down), m in zip(self.downs, levels):
            h = resnet1(h, m, t_emb, winograd)
            h = resnet2(h, m, t_emb, winograd)
            h = attend(attn, h, winograd)
            skips.append(h)
            h = down(masked(h, m))
        m = levels[-1]
        h = self.mid_block1(h, m, t_emb, winograd)
        h = attend(self.mid_attn, h, winograd)
        h = self.mid_block2(h, m, t_emb, winograd)
        # the up levels run at the resolutions of the down levels but the first, deepest first
        for (resnet1, resnet2, attn, up), m in zip(self.ups, reversed(levels[1:])):
            h = torch.cat((h, skips.pop()), dim=1)
            h = resnet1(h, m, t_emb, winograd)
            h = resnet2(h, m, t_emb, winograd)
            h = attend(attn, h, winograd)
            h = up(masked(h, m), winograd)
        m = levels[0]
        h = self.final_block(h, m, winograd)
        return masked(conv1x1(self.final_conv, masked(h, m), winograd), m).squeeze(1)
