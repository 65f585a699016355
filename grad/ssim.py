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


def ssim_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over the valid frames: fake, real [B, F, T] log-mels, mask [B, 1, T] -> scalar.

    # SSIM: Wang et al., IEEE TIP 2004 (11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2), the
    # pytorch-ssim formulation Grad-SVC uses; the map is averaged over valid frames only.
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
    m = mask.unsqueeze(1)  # [B, 1, 1, T]
    return 1.0 - (ssim_map * m).sum() / (m.sum() * fake.shape[1])
