"""Prior encoder: units + coarse pitch + speaker -> ``mu``, the mean of the decoder's prior (Grad-TTS text encoder).

Frames are 10 ms (100 Hz): units already repeated x2 from HuBERT's 50 Hz. Submodule names follow the official
checkpoint (``encoder.prenet.*``, ``encoder.speaker.*``, ``encoder.encoder.*``, ``encoder.proj_m.*``).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from grad.utils import sequence_mask

log = logging.getLogger(__name__)

# fixed hyper-parameters of the original (not in its config)
PRENET_LAYERS = 5
PRENET_KERNEL = 5
PRENET_DROPOUT = 0.5
N_HEADS = 2
N_LAYERS = 6
FFN_KERNEL = 3
DROPOUT = 0.1
REL_WINDOW = 4
SPEAKER_HIDDEN = 1024
SPEAKER_KERNEL = 5


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] (biased variance, eps 1e-4, parameters ``gamma``/``beta``)."""

    def __init__(self, channels: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.gamma.view(1, -1, 1) + self.beta.view(1, -1, 1)


class InstanceNormPrenet(nn.Module):
    """5 x (conv k5 -> instance norm -> ReLU -> dropout) then a 1x1 projection: removes speaker statistics.

    units [B, n_vecs, T], mask [B, 1, T] -> [B, channels, T] (masked).
    The norm's mean and unbiased variance run over the WHOLE padded time axis of the masked activations (padding
    counts as zeros), as in the original: the result depends on the amount of padding
    (docs/conventions.md#prenet-normalisation-sees-the-padding), so callers pad exactly like ``gvc_main`` (to a
    multiple of 4).
    """

    def __init__(self, in_channels: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.conv_layers = nn.ModuleList(
            nn.Conv1d(in_channels if i == 0 else channels, channels, PRENET_KERNEL, padding=PRENET_KERNEL // 2)
            for i in range(PRENET_LAYERS)
        )
        self.proj = nn.Conv1d(channels, channels, 1)
        # zero-initialised as the original's ConvReluNorm: from scratch, mu starts out depending on pitch and speaker
        self.proj.weight.data.zero_()
        self.proj.bias.data.zero_()
        self.drop = nn.Dropout(PRENET_DROPOUT)

    def instance_norm(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = x * mask
        mean = masked.mean(-1, keepdim=True)
        std = (masked.var(-1, keepdim=True) + self.eps).sqrt()
        return (x - mean) / std

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv in self.conv_layers:
            x = self.drop(F.relu(self.instance_norm(conv(x * mask), mask)))
        return self.proj(x) * mask


class RelativeSelfAttention(nn.Module):
    """Multi-head self-attention with learned relative-position keys/values within +-window (shared by heads).

    x [B, C, T], key_mask [B, 1, T] -> [B, C, T]. Masked keys get the score -1e4 (as the original, not -inf).
    The relative terms are computed on the (2w+1)-wide band only: O(T w) instead of the original's O(T^2) skew.
    """

    def __init__(self, channels: int, n_heads: int, window: int, dropout: float):
        super().__init__()
        assert channels % n_heads == 0
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        std = self.head_dim**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * std)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * std)
        self.drop = nn.Dropout(dropout)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # [B, H, T, d]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        scale = 1.0 / math.sqrt(self.head_dim)
        q, k, v = self._heads(self.conv_q(x)), self._heads(self.conv_k(x)), self._heads(self.conv_v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # [B, H, T, T]
        w = min(self.window, t - 1)
        offsets = range(-w, w + 1)
        # relative keys: scores[i, i + o] += q_i . e_k[o]
        rel = torch.matmul(q, self.emb_rel_k[0, self.window - w : self.window + w + 1].t()) * scale  # [B, H, T, 2w+1]
        scores = scores + _band_to_full(rel, offsets, t)
        scores = scores.masked_fill(key_mask.unsqueeze(1) == 0, -1e4)
        p = self.drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(p, v)
        # relative values: out_i += sum_o p[i, i + o] e_v[o]
        band = _full_to_band(p, offsets)  # [B, H, T, 2w+1]
        out = out + torch.matmul(band, self.emb_rel_v[0, self.window - w : self.window + w + 1])
        return self.conv_o(out.transpose(2, 3).reshape(b, c, t))


def _band_to_full(band: torch.Tensor, offsets: range, t: int) -> torch.Tensor:
    """[..., T, K] band values (column k = offset offsets[k]) -> [..., T, T] with full[i, i + o] = band[i, k]."""
    full = band.new_zeros(*band.shape[:-1], t)
    for k, o in enumerate(offsets):
        diag = full.diagonal(offset=o, dim1=-2, dim2=-1)
        diag.copy_(band[..., max(0, -o) : t - max(0, o), k])
    return full


def _full_to_band(full: torch.Tensor, offsets: range) -> torch.Tensor:
    """[..., T, T] -> [..., T, K]: band[i, k] = full[i, i + offsets[k]] (0 where that column does not exist)."""
    cols = []
    for o in offsets:
        diag = full.diagonal(offset=o, dim1=-2, dim2=-1)  # length t - |o|
        cols.append(F.pad(diag, (max(0, -o), max(0, o))))
    return torch.stack(cols, dim=-1)


class ConvFFN(nn.Module):
    """conv k3 -> ReLU -> dropout -> conv k3, inputs and output masked. [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, filter_channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel, padding=kernel // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.conv_1(x * mask)))
        return self.conv_2(x * mask) * mask


class RelativeTransformer(nn.Module):
    """Post-norm transformer (attention + conv FFN, channel LayerNorm after each residual). [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel: int,
                 dropout: float, window: int):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.attn_layers = nn.ModuleList(
            RelativeSelfAttention(channels, n_heads, window, dropout) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            ConvFFN(channels, filter_channels, kernel, dropout) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = x * mask
            x = norm1(x + self.drop(attn(x, mask)))
            x = norm2(x + self.drop(ffn(x, mask)))
        return x * mask


class GradientReversal(torch.autograd.Function):
    """Identity forward, gradient times -1 backward (Ganin & Lempitsky, ICML 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class GradientReversalLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GradientReversal.apply(x)


class WeightNormConv1d(nn.Module):
    """Conv1d with the weight stored as ``weight_g`` [C_out, 1, 1] and ``weight_v`` (norm over dims 1, 2).

    Same parameters and state-dict keys as ``torch.nn.utils.weight_norm(nn.Conv1d(...))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.padding = kernel // 2
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.weight_g = nn.Parameter(conv.weight.detach().norm(dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(conv.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(1, 2), keepdim=True)
        return F.conv1d(x, weight, self.bias, padding=self.padding)


class SpeakerClassifier(nn.Module):
    """Adversarial speaker classifier behind gradient reversal: prenet output [B, C, T] -> embedding [B, spk_dim].

    ``classifier`` = [GRL, wn-conv k5, ReLU, wn-conv k5, ReLU, wn-conv k5] (keys ``classifier.1/3/5``), then the
    mean over valid frames (the original averages over the padded length too; we exclude padding).
    Training only: the loss is the cosine distance to the true speaker embedding.
    """

    def __init__(self, channels: int, spk_dim: int, hidden: int = SPEAKER_HIDDEN):
        super().__init__()
        self.classifier = nn.Sequential(
            GradientReversalLayer(),
            WeightNormConv1d(channels, hidden, SPEAKER_KERNEL),
            nn.ReLU(),
            WeightNormConv1d(hidden, hidden, SPEAKER_KERNEL),
            nn.ReLU(),
            WeightNormConv1d(hidden, spk_dim, SPEAKER_KERNEL),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.classifier(x)
        return (y * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


class PriorEncoder(nn.Module):
    """units [B, n_vecs, T], F0 embedding [B, n_embs, T], speaker embedding [B, n_embs], lengths [B] int64 ->
    (mu [B, n_mels, T], mask [B, 1, T] float, prenet output [B, channels, T]); T frames at 100 Hz."""

    def __init__(self, n_vecs: int, n_mels: int, n_embs: int, spk_dim: int, channels: int, filter_channels: int):
        super().__init__()
        self.prenet = InstanceNormPrenet(n_vecs, channels)
        self.speaker = SpeakerClassifier(channels, spk_dim)
        width = channels + 2 * n_embs
        self.encoder = RelativeTransformer(width, filter_channels, N_HEADS, N_LAYERS, FFN_KERNEL, DROPOUT, REL_WINDOW)
        self.proj_m = nn.Conv1d(width, n_mels, 1)

    def forward(self, units: torch.Tensor, f0_emb: torch.Tensor, spk: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = units.shape[-1]
        mask = sequence_mask(lengths, t).unsqueeze(1).to(units.dtype)
        h = self.prenet(units, mask)
        x = torch.cat([h, f0_emb, spk.unsqueeze(-1).expand(-1, -1, t)], dim=1)
        x = self.encoder(x, mask)
        return self.proj_m(x) * mask, mask, h
