"""Score-based decoder (V2, branch 20230920-V2-96): a VP-SDE around the encoder output ``mu`` (Grad-TTS).

Mels [B, n_mels, T] at 100 frames/s, T a multiple of 4. Forward process ``dx = 0.5 beta(t) (mu - x) dt +
sqrt(beta(t)) dW``, beta from 0.05 to 20; the estimator predicts the score of x_t given (mu, speaker, t).
"""

from __future__ import annotations

import logging

import torch

from grad.estimator import UNetEstimator
from grad.samplers import NoiseSource, SampledDecoder, VPSchedule

log = logging.getLogger(__name__)

T_OFFSET = 1e-5  # training times are clamped to [offset, 1 - offset] (the original's value)


class ScoreDiffusion(SampledDecoder):
    """Wraps the U-Net ``estimator`` with the VP-SDE: noising loss for training, reverse samplers for synthesis."""

    kind = "score"

    def __init__(self, estimator: UNetEstimator, beta_min: float = 0.05, beta_max: float = 20.0):
        super().__init__()
        self.estimator = estimator
        self.schedule = VPSchedule(beta_min, beta_max)

    def start_state(self, mu: torch.Tensor, temperature: float, noise: NoiseSource) -> torch.Tensor:
        """z = mu + N(0, 1) / temperature (V2: the temperature DIVIDES the noise). mu [B, F, T] -> [B, F, T]."""
        return mu + noise.randn(mu.shape, mu) / temperature

    @property
    def process(self):
        return self.schedule

    def compute_loss(self, mel: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, spk: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoising score matching (Grad-TTS eq. 14, weighted by the noise variance): returns (loss, x_t).

        mel, mu [B, F, T], mask [B, 1, T]; t ~ U(1e-5, 1 - 1e-5) per item;
        loss = sum((score * sigma_t + eps)^2 * mask) / (sum(mask) * F).
        """
        device = generator.device if generator is not None else mel.device
        t = torch.rand(mel.shape[0], generator=generator, device=device).to(mel).clamp(T_OFFSET, 1.0 - T_OFFSET)
        cum = self.schedule.cum_beta(t).view(-1, 1, 1)
        mean = mel * torch.exp(-0.5 * cum) + mu * (1.0 - torch.exp(-0.5 * cum))
        std = torch.sqrt(1.0 - torch.exp(-cum))
        eps = torch.randn(mel.shape, generator=generator, device=device).to(mel) * mask
        xt = (mean + eps * std) * mask
        score = self.estimator(xt, mask, mu, t, spk)
        loss = torch.sum((score * std + eps) ** 2) / (torch.sum(mask) * mel.shape[1])
        return loss, xt
