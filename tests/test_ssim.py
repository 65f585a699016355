"""The SSIM mel loss is the original's: the SSIM map averaged over every position of the padded batch."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from grad.ssim import ssim_loss


def reference_loss(fake: np.ndarray, real: np.ndarray) -> float:
    """1 - mean over all B x F x T positions of the SSIM map (11x11 Gaussian, sigma 1.5, zero padding, +6)."""
    def blur(a):
        return gaussian_filter(a, sigma=1.5, mode="constant", cval=0.0, truncate=5 / 1.5)

    maps = []
    for x, y in zip(fake.astype(np.float64) + 6.0, real.astype(np.float64) + 6.0):
        mx, my = blur(x), blur(y)
        vx, vy, c = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        maps.append(((2 * mx * my + 1e-4) * (2 * c + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4)))
    return float(1.0 - np.mean(maps))


def test_ssim_averages_over_the_padded_batch():
    lengths = [500, 480, 400, 350, 300, 260, 250, 249]
    rng = np.random.default_rng(0)
    t = 500
    real = np.zeros((len(lengths), 20, t), np.float32)
    fake = np.zeros_like(real)
    for i, n in enumerate(lengths):  # zero beyond each length, like the collated mel and the masked mu
        real[i, :, :n] = rng.normal(-4, 2, (20, n))
        fake[i, :, :n] = real[i, :, :n] + rng.normal(0, 1, (20, n))
    got = float(ssim_loss(torch.from_numpy(fake), torch.from_numpy(real)))
    assert abs(got - reference_loss(fake, real)) < 1e-4
    # about the valid frames' loss times the valid fraction (0.697 here), not the valid frames' loss
    valid = float(np.mean([ssim_loss(torch.from_numpy(fake[i:i + 1, :, :n]), torch.from_numpy(real[i:i + 1, :, :n]))
                           * n for i, n in enumerate(lengths)]) / np.mean(lengths))
    assert abs(got / valid - sum(lengths) / (len(lengths) * t)) < 0.02
