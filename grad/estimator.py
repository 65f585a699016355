"""U-Net estimator of the decoder (Grad-TTS ``GradLogPEstimator2d``): the score (V2) or velocity (V3) field.

Input x, mu [B, n_mels, T] (T a multiple of 4), mask [B, 1, T], time t [B] or 0-d in [0, 1], speaker embedding
spk [B, n_embs] (Matcha's order ``(x, mask, mu, t, spks)``); output [B, n_mels, T] (masked). The mel is treated as
a one-channel image [B, C, n_mels, T]: channels 96 -> 192 -> 384 at full, half and quarter resolution, linear
attention and Rezero gates at every level. Submodule names follow the official checkpoint (``decoder.estimator.*``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

DIM_MULTS = (1, 2, 4)
GROUPS = 8
ATTN_HEADS = 4
ATTN_HEAD_DIM = 32


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


class Block(nn.Module):
    """conv 3x3 -> GroupNorm(8) -> Mish, input and output masked. [B, C_in, F, T] -> [B, C_out, F, T]."""

    def __init__(self, dim: int, dim_out: int, groups: int = GROUPS):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class ResnetBlock(nn.Module):
    """Two Blocks with the time embedding added in between, plus a (1x1 conv) residual."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = GROUPS):
        super().__init__()
        self.mlp = nn.Sequential(Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(time_emb)[:, :, None, None]
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


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


class Rezero(nn.Module):
    """fn(x) * g with a scalar gate g (initialised to 0)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.g = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.g


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """t [B] -> [B, dim]: [sin, cos] of scale * t * exp(-ln(1e4) i / (dim/2 - 1)); frequencies in float32 as the
    original (``.float()``), so a float64 t is multiplied by float32-rounded frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    args = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((args.sin(), args.cos()), dim=-1)


class UNetEstimator(nn.Module):
    """The decoder's 2-D U-Net over [mu, x, speaker map] stacked as 3 image channels (see module docstring).

    ``grad.estimator_cpu.CPUUNetEstimator`` is the same network (same modules, same state dict) with a faster
    forward for float32 inference on CPU."""

    def __init__(self, dim: int, n_mels: int = 100, emb_dim: int = 64, pe_scale: float = 1000):
        super().__init__()
        self.dim = dim
        self.pe_scale = pe_scale
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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spk: torch.Tensor) -> torch.Tensor:
        """x [B, n_mels, T], mask [B, 1, T], mu [B, n_mels, T], t [B] or 0-d, spk [B, emb_dim] -> [B, n_mels, T]."""
        t_emb = self.time_embedding(t, x.shape[0])
        s = self.spk_mlp(spk).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        # channels-last activations: the same numbers in the memory layout the convolution kernels prefer
        h = torch.stack([mu, x, s], 1).contiguous(memory_format=torch.channels_last)
        mask = mask.unsqueeze(1)  # [B, 1, 1, T]

        skips = []
        masks = [mask]
        for resnet1, resnet2, attn, down in self.downs:
            m = masks[-1]
            h = resnet1(h, m, t_emb)
            h = resnet2(h, m, t_emb)
            h = attn(h)
            skips.append(h)
            h = down(h * m)
            masks.append(m[:, :, :, ::2])
        masks.pop()
        m = masks[-1]
        h = self.mid_block1(h, m, t_emb)
        h = self.mid_attn(h)
        h = self.mid_block2(h, m, t_emb)
        for resnet1, resnet2, attn, up in self.ups:
            m = masks.pop()
            h = torch.cat((h, skips.pop()), dim=1)
            h = resnet1(h, m, t_emb)
            h = resnet2(h, m, t_emb)
            h = attn(h)
            h = up(h * m)
        h = self.final_block(h, mask)
        return (self.final_conv(h * mask) * mask).squeeze(1)
