"""Sampling noise tied to frame positions: windowed synthesis of a long song draws, for every frame, the numbers a
single pass would draw, whatever the window size or batch. These are ``grad.samplers.NoiseSource`` subclasses, so
every sampler takes them as it takes the plain source.
"""

from __future__ import annotations

import numpy as np
import torch

from grad.samplers import NoiseSource


class PositionalNoise:
    """N(0, 1) sampling noise tied to absolute frame positions, so windowed synthesis draws the same numbers for a
    frame whatever the window: the k-th draw of a window starting at frame s covers frames [s, s + T) of the k-th
    song-long noise stream. Blocks of ``BLOCK`` frames are drawn on the CPU from (seed, draw, block), which also
    makes CPU and CUDA runs use the same noise.
    """

    BLOCK = 100

    def __init__(self, seed: int):
        self.seed = int(seed)

    def _block(self, draw: int, block: int, channels: int) -> torch.Tensor:
        # SeedSequence mixes (seed, draw, block) into independent streams (no collisions for long songs)
        state = np.random.SeedSequence([self.seed, draw, block]).generate_state(2, dtype=np.uint32)
        g = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
        return torch.randn(channels, self.BLOCK, generator=g)

    def at(self, start: int) -> WindowNoise:
        """The noise source of a window whose first frame is ``start`` (100 Hz frames of the whole song)."""
        return WindowNoise(self, start)


class WindowNoise(NoiseSource):
    """A ``NoiseSource`` drawing one window's share of ``PositionalNoise``: ``randn((..., C, T))`` gives frames
    ``[start, start + T)`` of the next song-long stream, the same for every leading (batch) index."""

    def __init__(self, noise: PositionalNoise, start: int):
        super().__init__()
        self.noise, self.start, self.draws = noise, start, 0

    def randn(self, shape, like: torch.Tensor) -> torch.Tensor:
        *lead, channels, t = shape
        first, last = self.start // PositionalNoise.BLOCK, (self.start + t - 1) // PositionalNoise.BLOCK
        blocks = torch.cat([self.noise._block(self.draws, b, channels) for b in range(first, last + 1)], dim=1)
        offset = self.start - first * PositionalNoise.BLOCK
        self.draws += 1
        out = blocks[:, offset: offset + t].reshape(*([1] * len(lead)), channels, t).expand(*lead, channels, t)
        return out.to(dtype=like.dtype, device=like.device)


class BatchNoise(NoiseSource):
    """The noise of a batch of windows: item i draws what window i draws alone (``PositionalNoise.at``)."""

    def __init__(self, items: list[WindowNoise]):
        super().__init__()
        self.items = items

    def randn(self, shape, like: torch.Tensor) -> torch.Tensor:
        batch, *rest = shape
        if batch != len(self.items):
            raise ValueError(f"noise for a batch of {batch} requested from {len(self.items)} windows")
        return torch.cat([item.randn((1, *rest), like) for item in self.items])
