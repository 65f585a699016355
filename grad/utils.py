"""Small tensor helpers of the acoustic model: coarse pitch bins, length padding, masks, random segments."""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)

# coarse pitch: 256 bins on the mel scale between 50 and 1100 Hz (bin 1 also holds unvoiced / below 50 Hz)
F0_BINS = 256
F0_MIN = 50.0
F0_MAX = 1100.0
F0_MEL_MIN = 1127.0 * math.log(1.0 + F0_MIN / 700.0)
F0_MEL_MAX = 1127.0 * math.log(1.0 + F0_MAX / 700.0)

# the U-Net halves the time axis twice, so every sequence it sees is a multiple of 2**2 frames
UNET_DOWNSAMPLINGS = 2


def f0_to_coarse(f0: torch.Tensor) -> torch.Tensor:
    """F0 in Hz (any shape, 0 = unvoiced) -> coarse mel-scale bin (int64, same shape) in 1..255.

    Arithmetic is done in the input dtype, in the original's order (``grad/utils.py`` torch path), so float32
    input gives the original's bins exactly; rounding is ``floor(m + 0.5)``.
    """
    f0_mel = 1127.0 * torch.log(1.0 + f0 / 700.0)
    voiced = f0_mel > 0
    f0_mel = torch.where(voiced, (f0_mel - F0_MEL_MIN) * (F0_BINS - 2) / (F0_MEL_MAX - F0_MEL_MIN) + 1.0, f0_mel)
    f0_mel = f0_mel.clamp(min=1.0, max=F0_BINS - 1)
    return (f0_mel + 0.5).long()


def fix_len_compatibility(n: int, num_downsamplings: int = UNET_DOWNSAMPLINGS) -> int:
    """Smallest multiple of ``2 ** num_downsamplings`` (4 by default) that is >= ``n`` frames."""
    step = 2**num_downsamplings
    return int(-(-int(n) // step) * step)


def sequence_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """lengths [B] (int) -> bool mask [B, max_len] (True for frame < length); max_len defaults to max(lengths)."""
    if max_len is None:
        max_len = int(lengths.max())
    positions = torch.arange(int(max_len), device=lengths.device, dtype=lengths.dtype)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def random_segment_starts(lengths: torch.Tensor, segment: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random start frame [B] (int64) of a ``segment``-frame window inside each valid length.

    Items shorter than the segment start at 0 (the window then reaches into the padding, which the mask zeroes).
    """
    room = (lengths - segment).clamp(min=0).to(torch.float32)
    u = torch.rand(lengths.shape, generator=generator, device=generator.device if generator else lengths.device)
    return (u.to(lengths.device) * room).long()


def slice_segments(x: torch.Tensor, starts: torch.Tensor, segment: int) -> torch.Tensor:
    """x [B, C, T] -> [B, C, segment]: frames starts[b] .. starts[b] + segment - 1 (zeros beyond T)."""
    if x.shape[-1] < segment:
        x = torch.nn.functional.pad(x, (0, segment - x.shape[-1]))
    index = starts.view(-1, 1, 1) + torch.arange(segment, device=x.device).view(1, 1, -1)
    return torch.gather(x, 2, index.expand(x.shape[0], x.shape[1], segment))
