"""Structural-similarity loss between two log-mel spectrograms (the "mel" loss between ``mu`` and the mel)."""

from __future__ import annotations

import logging
import math

import torch
from torch.nn import functional as F

log = logging.getLogger(__name__)

WINDOW = 11
SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2
LOG_MEL_OFFSET = 6.0  # log-mels are mostly in [-11, 3]; shifted like the usual mel SSIM losses (DiffSinger)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 2-D Gaussian window [1, 1, size, size]."""
    g = torch.tensor([math.exp(-((i - size // 2) ** 2) / (2 * sigma**2)) for i in range(size)], dtype=dtype,
                     device=device)
    g = g / g.sum()
    return torch.outer(g, g)[None, None]


def ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over every position of the padded batch: fake, real [B, F, T] log-mels (zero in the padding)
    -> scalar.

    # SSIM: Wang et al., IEEE TIP 2004 (11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2), the
    # pytorch-ssim formulation of the original's grad/ssim.py. Like the original, the map is averaged over all
    # B x F x T positions, padding included (its mask multiplied the averaged scalar and changed nothing): padded
    # frames are the constant +6 in both images, so the loss is about the valid frames' loss x the valid fraction.
    """
    x = (fake + LOG_MEL_OFFSET).unsqueeze(1)
    y = (real + LOG_MEL_OFFSET).unsqueeze(1)
    w = gaussian_window(dtype=x.dtype, device=x.device)
    pad = WINDOW // 2
    mu_x = F.conv2d(x, w, padding=pad)
    mu_y = F.conv2d(y, w, padding=pad)
    var_x = F.conv2d(x * x, w, padding=pad) - mu_x**2
    var_y = F.conv2d(y * y, w, padding=pad) - mu_y**2
    cov = F.conv2d(x * y, w, padding=pad) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return 1.0 - ssim_map.mean()
