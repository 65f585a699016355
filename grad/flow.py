"""Flow-matching decoder (V3, branch 20230930-V3-CFM): OT conditional flow matching conditioned on ``mu``.

Mels [B, n_mels, T] at 100 frames/s, T a multiple of 4. Path ``x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`` from
noise x_0 ~ N(0, 1) at t = 0 to the mel x_1 at t = 1; the estimator predicts the velocity
``x_1 - (1 - sigma_min) x_0``. sigma_min = 1e-4 is the original's CFM; sigma_min = 0 is rectified flow
(straight paths, the seed's TODO), same U-Net, same samplers.
"""

from __future__ import annotations

import logging

import torch

from grad.estimator import UNetEstimator
from grad.samplers import FlowPath, NoiseSource, SampledDecoder

log = logging.getLogger(__name__)


class FlowMatching(SampledDecoder):
    """Wraps the U-Net ``estimator`` with the CFM path: regression loss for training, ODE samplers for synthesis."""

    kind = "flow"

    def __init__(self, estimator: UNetEstimator, sigma_min: float = 1e-4):
        super().__init__()
        self.estimator = estimator
        self.path = FlowPath(sigma_min)

    @property
    def sigma_min(self) -> float:
        return self.path.sigma_min

    def start_state(self, mu: torch.Tensor, temperature: float, noise: NoiseSource) -> torch.Tensor:
        """z = N(0, 1) * temperature (V3: the temperature MULTIPLIES the noise; pure noise, not masked, as the
        original: padded frames of the output keep this noise). mu [B, F, T] only gives shape/dtype."""
        return noise.randn(mu.shape, mu) * temperature

    @property
    def process(self):
        return self.path

    def compute_loss(self, mel: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, spk: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional flow matching (Lipman et al. 2023, eq. 22-23; Matcha-TTS): returns (loss, x_t).

        t ~ U(0, 1) per item, z ~ N(0, 1); loss = sum((v(x_t) - u)^2) / (sum(mask) * F) with the target
        u = mel - (1 - sigma_min) z masked (the original leaves u unmasked; the estimator output is masked, so
        that only adds a constant to the loss value: gradients are the same).
        """
        device = generator.device if generator is not None else mel.device
        b = mel.shape[0]
        t = torch.rand(b, 1, 1, generator=generator, device=device).to(mel)
        z = torch.randn(mel.shape, generator=generator, device=device).to(mel)
        s = self.path.sigma_min
        xt = (1 - (1 - s) * t) * z + t * mel
        target = (mel - (1 - s) * z) * mask
        v = self.estimator(xt, mask, mu, t.view(b), spk)
        loss = torch.sum((v - target) ** 2) / (torch.sum(mask) * mel.shape[1])
        return loss, xt
