"""The decoder U-Net's CPU inference path: the same network as ``grad.estimator.UNetEstimator``, faster on CPU.

``CPUUNetEstimator`` subclasses the reference (same modules, same state-dict keys) and replaces only ``forward``,
for float32 inference on CPU with NNPACK in the torch build (elsewhere it runs the reference forward):

- 3x3 convolutions through NNPACK's Winograd transform (about 2x faster than mkldnn on AVX2 CPUs, ~1e-5 relative
  difference in float32), activations channels-first; the 3-channel input convolution as one GEMM over its patches;
- the transposed convolutions (k4, s2, p1) as 4-phase 3x3 convolutions on the same Winograd path;
- 1x1 convolutions as one matrix product per item (mkldnn's channels-first 1x1 kernels are ~2x slower here);
- each gated linear attention and its residual folded into one [C, C] matrix per item;
- Mish as ``x - 2x / ((1 + e^x)^2 + 1)`` (one exponential), in place, in cache-sized blocks;
- intermediate tensors overwritten in place, and the mask products skipped when every frame is valid.

Equal to the reference up to float32 rounding (tests/test_grad_model.py compares the two). Inference only: it
records no gradients (``GradSVC(cpu_kernels=True)``, set by ``infer.cpu_kernels``, builds it for conversion;
training and validation use the reference).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from common.derived import derived
from grad.estimator import Block, LinearAttention, Residual, ResnetBlock, UNetEstimator, Upsample

log = logging.getLogger(__name__)

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


_NNPACK: bool | None = None


def nnpack_available() -> bool:
    """True while NNPACK can be used: this torch build has it (the first call also initialises it) and no call has
    been refused since."""
    global _NNPACK
    if _NNPACK is None:
        _NNPACK = bool(torch.backends.nnpack.is_available())
    return _NNPACK


def applies(x: torch.Tensor) -> bool:
    """Whether this path applies to the stacked input ``x``: float32 on CPU, NNPACK in this build."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and nnpack_available()


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


def conv3x3(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 3x3 stride-1 convolution through NNPACK (the module itself once NNPACK refused); a 3-channel input as one
    GEMM over its 3x3 patches instead (mkldnn: ~2x slower)."""
    if x.shape[1] < 8:
        b, _, h, w = x.shape
        cols = F.unfold(x, 3, padding=1)  # [B, C_in * 9, F * T]
        return matmul_items(conv.weight.flatten(1), cols, conv.bias).view(b, -1, h, w)
    y = conv3x3_weights(x, conv.weight, conv.bias)
    return conv(x) if y is None else y


def conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution (or Identity) on channels-first x as one matrix product per item."""
    if not isinstance(conv, nn.Conv2d):
        return conv(x)
    b, _, h, w = x.shape
    return matmul_items(conv.weight.flatten(1), x.reshape(b, -1, h * w), conv.bias).view(b, -1, h, w)


def masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x * mask``; ``mask`` None means every frame is valid (x * 1 == x exactly: the product is skipped)."""
    return x if mask is None else x * mask


def block(module: Block, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``Block.forward``: conv 3x3 -> GroupNorm -> Mish, masked, on this path."""
    conv, norm, _ = module.block
    h = mish_(norm(conv3x3(conv, masked(x, mask))))
    return h if mask is None else h.mul_(mask)


def resnet_block(module: ResnetBlock, x: torch.Tensor, mask: torch.Tensor | None,
                 time_emb: torch.Tensor) -> torch.Tensor:
    """``ResnetBlock.forward`` on this path."""
    temb = module.mlp(time_emb)[:, :, None, None]
    xm = masked(x, mask)
    h = block(module.block2, block(module.block1, x, mask).add_(temb), mask)
    return h.add_(conv1x1(module.res_conv, xm))


def attention_residual(module: Residual, x: torch.Tensor) -> torch.Tensor:
    """``Residual(Rezero(LinearAttention))`` on channels-first x: ``x + g * attn(x)`` in fewer operations. The query
    and output projections enter only linearly, so to_out(context^T q) + x = (g Wo C^T Wq + I) x + g bo with a
    [C, C] matrix per item (C^T block-diagonal over heads); the query projection and the [heads * d, F * T] product
    are skipped. Equal to the modules up to float rounding."""
    gate = module.fn.g
    attn: LinearAttention = module.fn.fn
    b, c, h, w = x.shape
    hidden = attn.to_out.weight.shape[1]
    x3 = x.reshape(b, c, h * w)
    w_q, w_kv = attn.to_qkv.weight.flatten(1).split([hidden, 2 * hidden])
    kv = matmul_items(w_kv, x3)
    k, v = kv.unflatten(1, (2, attn.heads, -1)).unbind(1)  # each [B, heads, d, N]
    context = torch.matmul(k.softmax(dim=-1), v.transpose(-1, -2))  # [B, heads, d_k, d_v]
    # (C^T Wq) per head: [B, heads, d_v, C] -> [B, heads * d_v, C]; then Wo (C^T Wq) [B, C, C]
    cq = torch.matmul(context.transpose(-1, -2), w_q.view(attn.heads, -1, c)).flatten(1, 2)
    mat = torch.matmul(attn.to_out.weight.flatten(1), cq).mul_(gate)
    mat.diagonal(dim1=-2, dim2=-1).add_(1)
    return matmul_items(mat, x3, attn.to_out.bias * gate).view(b, c, h, w)


# The transposed convolution (k4, s2, p1) as a 3x3 convolution with 4 output phases: output row 2m + a takes input
# rows m - 1, m (a = 0: kernel rows 3, 1) or m, m + 1 (a = 1: kernel rows 2, 0); the same for columns.
_PHASE_TAPS = {(0, 0): 3, (0, 1): 1, (1, 1): 2, (1, 2): 0}  # (phase, 3x3 row) -> row of the 4x4 kernel


def phase_weights(module: Upsample) -> tuple[torch.Tensor, torch.Tensor]:
    """The transposed convolution's [C_out * 4, C_in, 3, 3] kernel (channels ordered (out, row phase, column
    phase)) and the bias repeated to match; recomputed only when the parameters change."""
    wt, bias = module.conv.weight, module.conv.bias

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        c_in, c_out = wt.shape[:2]
        k = wt.new_zeros(c_out, 2, 2, c_in, 3, 3)
        for (a, py), ky in _PHASE_TAPS.items():
            for (b, px), kx in _PHASE_TAPS.items():
                k[:, a, b, :, py, px] = wt[:, :, ky, kx].t()
        return k.reshape(c_out * 4, c_in, 3, 3), bias.repeat_interleave(4)

    return derived(module, "_phase_cache", (wt, bias), make)


def upsample(module: Upsample, x: torch.Tensor) -> torch.Tensor:
    """``Upsample.forward`` as its 4-phase 3x3 form through NNPACK (~25% faster than mkldnn's transposed conv)."""
    y = conv3x3_weights(x, *phase_weights(module))
    return module.conv(x) if y is None else F.pixel_shuffle(y, 2)


class CPUUNetEstimator(UNetEstimator):
    """``UNetEstimator`` with the CPU inference forward of this module (see its docstring); same state dict."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spk: torch.Tensor) -> torch.Tensor:
        """x [B, n_mels, T], mask [B, 1, T], mu [B, n_mels, T], t [B] or 0-d, spk [B, emb_dim] -> [B, n_mels, T]."""
        if torch.is_grad_enabled():
            raise RuntimeError("CPUUNetEstimator is for inference (under torch.inference_mode or no_grad); "
                               "train with the reference UNetEstimator (GradSVC(cpu_kernels=False))")
        t_emb = self.time_embedding(t, x.shape[0])
        s = self.spk_mlp(spk).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        h = torch.stack([mu, x, s], 1)
        if not applies(h):
            return super().forward(x, mask, mu, t, spk)
        # the mask of each resolution [B, 1, 1, T / 2^i]; None where every frame is valid (one whole utterance or a
        # full window)
        full = bool(mask.min() > 0)
        levels = [None if full else mask.unsqueeze(1)[..., :: 2**i] for i in range(len(self.downs))]
        skips = []
        for (resnet1, resnet2, attn, down), m in zip(self.downs, levels):
            h = resnet_block(resnet1, h, m, t_emb)
            h = resnet_block(resnet2, h, m, t_emb)
            h = attention_residual(attn, h)
            skips.append(h)
            h = down(masked(h, m))
        m = levels[-1]
        h = resnet_block(self.mid_block1, h, m, t_emb)
        h = attention_residual(self.mid_attn, h)
        h = resnet_block(self.mid_block2, h, m, t_emb)
        # the up levels run at the resolutions of the down levels but the first, deepest first
        for (resnet1, resnet2, attn, up), m in zip(self.ups, reversed(levels[1:])):
            h = torch.cat((h, skips.pop()), dim=1)
            h = resnet_block(resnet1, h, m, t_emb)
            h = resnet_block(resnet2, h, m, t_emb)
            h = attention_residual(attn, h)
            h = upsample(up, masked(h, m))
        m = levels[0]
        h = block(self.final_block, h, m)
        return masked(conv1x1(self.final_conv, masked(h, m)), m).squeeze(1)
