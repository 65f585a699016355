"""HuBERT-soft content encoder (Niekerk et al., "A comparison of discrete and soft speech units", 2022).

Architecture and state-dict keys follow the official ``hubert-soft-0d54a1f4.pt`` (bshall/hubert v0.1, loaded by
the original's ``hubert/hubert_model.py``): a 7-layer CNN over 16 kHz audio (hop 320 samples, 50 frames/s),
a projection to 768 channels, a convolutional positional embedding, 12 post-norm transformer layers and a linear
projection to 256-d "soft units".

``compute_units`` is the one function that preprocessing, training and inference use to turn audio into units.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import CheckpointError, build_loaded, load_checkpoint, strip_prefix
from common.derived import derived
from common.runtime import release_memory

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "hubert_pretrain/hubert-soft-0d54a1f4.pt"
# fixed by the pretrained network (common.config.FRAME_RATE follows from them)
SAMPLE_RATE = 16000
HOP = 320  # samples per unit frame: 5 * 2^4 * 2^2
UNIT_DIM = 256
# units() pads (400 - 320) / 2 zeros on each side: the CNN's receptive field is 400 samples, its stride 320
_PAD = 40
_CONV0_STRIDE, _CONV0_KERNEL = 5, 10

# (mean, biased variance) per channel of the first conv's output, each [B, 512, 1]
Norm0Stats = tuple[torch.Tensor, torch.Tensor]


class FeatureExtractor(nn.Module):
    """Waveform CNN: ``[B, 1, N]`` at 16 kHz -> ``[B, 512, (N - 400) // 320 + 1]`` (exact erf GELU)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv1d(1, 512, 10, 5, bias=False)
        # one group per channel: each channel is normalised over the whole time axis of the input
        self.norm0 = nn.GroupNorm(512, 512)
        self.conv1 = nn.Conv1d(512, 512, 3, 2, bias=False)
        self.conv2 = nn.Conv1d(512, 512, 3, 2, bias=False)
        self.conv3 = nn.Conv1d(512, 512, 3, 2, bias=False)
        self.conv4 = nn.Conv1d(512, 512, 3, 2, bias=False)
        self.conv5 = nn.Conv1d(512, 512, 2, 2, bias=False)
        self.conv6 = nn.Conv1d(512, 512, 2, 2, bias=False)

    def forward(self, wav: torch.Tensor, norm0_stats: Norm0Stats | None = None) -> torch.Tensor:
        """``norm0_stats = (mean, var)`` ``[B, 512, 1]`` replace ``norm0``'s statistics of this input (chunking)."""
        x = self.conv0(wav)
        if norm0_stats is None:
            x = self.norm0(x)
        else:
            mean, var = norm0_stats
            # at least float32, as GroupNorm runs under autocast
            x = x.to(torch.promote_types(x.dtype, mean.dtype))
            x = (x - mean) * torch.rsqrt(var + self.norm0.eps) * self.norm0.weight[:, None] + self.norm0.bias[:, None]
        x = F.gelu(x)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.conv6):
            x = F.gelu(conv(x))
        return x


class FeatureProjection(nn.Module):
    """``[B, T, 512]`` -> LayerNorm -> Linear -> ``[B, T, 768]``."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(512)
        self.projection = nn.Linear(512, 768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.norm(x))


class WeightNormConv1d(nn.Module):
    """``Conv1d`` whose weight is ``weight_g * weight_v / ||weight_v||``, the norm taken over every axis except ``dim``.

    Holds the ``weight_g`` / ``weight_v`` / ``bias`` parameters under the names of the legacy
    ``torch.nn.utils.weight_norm``, so official state dicts load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, groups: int,
                 dim: int) -> None:
        super().__init__()
        self.padding, self.groups, self.dim = padding, groups, dim
        v = torch.empty(out_channels, in_channels // groups, kernel_size)
        nn.init.kaiming_uniform_(v, a=5**0.5)
        self.weight_v = nn.Parameter(v)
        g_shape = [1, 1, 1]
        g_shape[dim] = v.shape[dim]
        # the model is only ever used with loaded weights; unit magnitudes keep construction cheap
        self.weight_g = nn.Parameter(torch.ones(g_shape))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def _norm(self, v: torch.Tensor) -> torch.Tensor:
        axes = tuple(a for a in range(v.dim()) if a != self.dim)
        return v.norm(dim=axes, keepdim=True)

    def weight(self) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.weight_v * (self.weight_g / self._norm(self.weight_v))
        # inference: computed once per parameter version (the norm of the [768, 48, 128] kernel took ~16 ms a call)
        def make() -> torch.Tensor:
            with torch.no_grad():
                return self.weight_v * (self.weight_g / self._norm(self.weight_v))

        return derived(self, "_weight_cache", (self.weight_v, self.weight_g), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class PositionalConvEmbedding(nn.Module):
    """Grouped conv (k128, 16 groups, weight norm over dim 2): ``[B, T, 768]`` -> ``[B, T, 768]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = WeightNormConv1d(768, 768, 128, padding=64, groups=16, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.transpose(1, 2))
        # an even kernel with padding k/2 gives T + 1 steps; the last is dropped
        return F.gelu(x[:, :, :-1]).transpose(1, 2)


class TransformerEncoder(nn.Module):
    """12 post-norm ``nn.TransformerEncoderLayer``s (768, 12 heads, FF 3072, GELU); no final norm."""

    def __init__(self, num_layers: int = 12) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(768, 12, 3072, activation="gelu", batch_first=True) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class LabelTable(nn.Module):
    """Holds ``weight [n, dim]``: the original's training-only label embedding (logits over k-means classes)."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, dim))


class HubertSoft(nn.Module):
    """HuBERT-soft: 16 kHz audio -> 256-d soft units at 50 frames/s.

    ``masked_spec_embed`` and ``label_embedding`` are used only in training the original (masking / logits);
    they are kept so the official file loads with every key accounted for.
    """

    def __init__(self) -> None:
        super().__init__()
        self.masked_spec_embed = nn.Parameter(torch.zeros(768))
        self.feature_extractor = FeatureExtractor()
        self.feature_projection = FeatureProjection()
        self.positional_embedding = PositionalConvEmbedding()
        self.norm = nn.LayerNorm(768)
        self.encoder = TransformerEncoder()
        self.proj = nn.Linear(768, UNIT_DIM)
        self.label_embedding = LabelTable(100, UNIT_DIM)

    def features(self, wav: torch.Tensor, norm0_stats: Norm0Stats | None = None) -> torch.Tensor:
        """CNN features: ``wav [B, 1, N]`` at 16 kHz (N >= 320) -> ``[B, 512, N // 320]``.

        ``norm0_stats`` (from ``norm0_stats``) normalise with the statistics of a longer signal this one is cut from.
        """
        return self.feature_extractor(F.pad(wav, (_PAD, _PAD)), norm0_stats)

    def encode(self, wav: torch.Tensor, norm0_stats: Norm0Stats | None = None) -> torch.Tensor:
        """Transformer output before ``proj``: ``wav [B, 1, N]`` -> ``[B, N // 320, 768]``."""
        x = self.feature_projection(self.features(wav, norm0_stats).transpose(1, 2))
        x = self.norm(x + self.positional_embedding(x))
        return self.encoder(x)

    def units(self, wav: torch.Tensor, norm0_stats: Norm0Stats | None = None) -> torch.Tensor:
        """Soft units: ``wav [B, 1, N]`` at 16 kHz (N >= 320) -> ``[B, N // 320, 256]`` at 50 frames/s.

        Frame k sees input samples ``[320k - 40, 320k + 360)`` (zeros outside the input) through the CNN; the
        first norm and the transformer see the whole input.
        """
        return self.proj(self.encode(wav, norm0_stats))


def load_hubert(path: str | Path = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu") -> HubertSoft:
    """Load the official flat state dict (keys with or without ``module.``) into a ``HubertSoft`` in eval mode.

    Raises ``CheckpointError`` (one line naming the file) when the file is missing, unreadable, not a state dict,
    lacks a key of the model or has a wrongly shaped tensor.
    """
    state = load_checkpoint(path, kind="hubert")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a HuBERT-soft state dict (expected a flat dict of tensors)")
    state = strip_prefix(state, "module.")
    return build_loaded(HubertSoft, state, str(path)).to(device).eval()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def compute_units(
    model: HubertSoft,
    wav16: np.ndarray,
    device: str | torch.device | None = None,
    chunk_seconds: float = 20.0,
    context_seconds: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Soft units of a mono 16 kHz signal: ``wav16 (N,)`` float32 -> ``float32 [N // 320, 256]`` at 50 frames/s.

    Inputs longer than ``chunk_seconds`` are processed in windows of ``chunk_seconds`` of output frames with
    ``context_seconds`` of real audio on each inner side (cropped off afterwards), so memory is bounded. Windows
    start on multiples of 320 samples, so the result has exactly ``N // 320`` frames; every window normalises its
    first conv with the whole signal's statistics (streamed, ``norm0_stats``), so the CNN features equal a single
    pass and only attention and the positional conv (+-64 frames) see less than the whole signal. (The original's
    ``hubert/inference.py`` ran independent 20 s pieces without context.) Inputs shorter than 320 samples give
    ``[0, 256]``. ``device`` defaults to the model's; on CUDA the model runs under fp16 autocast, else in fp32.
    ``progress(1)`` is called after each window (``unit_windows`` gives their number).
    """
    wav16 = np.ascontiguousarray(wav16, dtype=np.float32)
    if wav16.ndim != 1:
        raise ValueError(f"compute_units expects a mono signal (N,), got shape {wav16.shape}")
    if chunk_seconds <= 0 or context_seconds < 0:
        raise ValueError(f"chunk_seconds must be > 0 and context_seconds >= 0, got {chunk_seconds}, {context_seconds}")
    device = torch.device(device) if device is not None else _device_of(model)
    if _device_of(model) != device:
        model.to(device)  # outside inference mode, so the moved parameters stay usable for training
    with torch.inference_mode():
        return _units_windowed(model, wav16, device, chunk_seconds, context_seconds, progress)


def unit_windows(n_samples: int, chunk_seconds: float = 20.0) -> int:
    """How many windows ``compute_units`` runs for ``n_samples`` at 16 kHz (for a progress bar)."""
    chunk = max(1, round(chunk_seconds * (SAMPLE_RATE // HOP)))
    return -(-(n_samples // HOP) // chunk)


def norm0_stats(model: HubertSoft, wav16: np.ndarray, device: torch.device, piece_frames: int) -> Norm0Stats:
    """Statistics ``norm0`` would compute over the whole padded signal, streamed in pieces of bounded size.

    ``wav16 (N,)`` at 16 kHz -> (mean, biased variance) ``[1, 512, 1]`` float32 of the first conv's output.
    The conv is linear and has no bias, so with ``x_t`` the 10-sample input frames and ``w_c`` the kernel of
    channel c: mean_c = w_c . E[x_t] and var_c = w_c^T Cov[x_t] w_c. Only the frames' mean and 10 x 10 second
    moment are accumulated (float64, ``piece_frames`` unit frames = 64 conv steps each at a time).
    """
    padded = np.pad(wav16, (_PAD, _PAD))
    n_steps = (padded.shape[0] - _CONV0_KERNEL) // _CONV0_STRIDE + 1
    piece = max(1, piece_frames) * (HOP // _CONV0_STRIDE)
    first = torch.zeros(_CONV0_KERNEL, dtype=torch.float64)
    second = torch.zeros(_CONV0_KERNEL, _CONV0_KERNEL, dtype=torch.float64)
    for a in range(0, n_steps, piece):
        b = min(a + piece, n_steps)
        x = torch.from_numpy(padded[a * _CONV0_STRIDE:(b - 1) * _CONV0_STRIDE + _CONV0_KERNEL]).double()
        frames = x.unfold(0, _CONV0_KERNEL, _CONV0_STRIDE)  # [b - a, 10]
        first += frames.sum(0)
        second += frames.T @ frames
    mu = first / n_steps
    cov = second / n_steps - torch.outer(mu, mu)
    w = model.feature_extractor.conv0.weight.detach()[:, 0, :].double().cpu()  # [512, 10]
    mean = w @ mu
    var = ((w @ cov) * w).sum(1).clamp_min(0.0)
    return mean.float().to(device)[None, :, None], var.float().to(device)[None, :, None]


def _units_windowed(model: HubertSoft, wav16: np.ndarray, device: torch.device, chunk_seconds: float,
                    context_seconds: float, progress: Callable[[int], None] | None = None) -> np.ndarray:
    n_frames = wav16.shape[0] // HOP
    if n_frames == 0:
        return np.zeros((0, UNIT_DIM), dtype=np.float32)
    frames_per_second = SAMPLE_RATE // HOP
    chunk = max(1, round(chunk_seconds * frames_per_second))
    context = round(context_seconds * frames_per_second)
    autocast = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
                else contextlib.nullcontext())
    out = np.empty((n_frames, UNIT_DIM), dtype=np.float32)
    # every window normalises its first conv with the whole signal's statistics, as a single pass would
    stats = norm0_stats(model, wav16, device, chunk + 2 * context) if n_frames > chunk else None
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        w0 = max(0, start - context)
        w1 = min(n_frames, stop + context)
        # the last window keeps the samples past the final full frame (frame T-1 sees up to 40 of them)
        s1 = wav16.shape[0] if w1 == n_frames else w1 * HOP
        x = torch.from_numpy(wav16[w0 * HOP:s1]).to(device)[None, None]
        with autocast:
            units = model.units(x, stats)[0]
        out[start:stop] = units[start - w0:stop - w0].float().cpu().numpy()
        del units, x
        release_memory()  # a window's activations (~1 GB) would otherwise stay in the tuned heap
        if progress is not None:
            progress(1)
    return out
