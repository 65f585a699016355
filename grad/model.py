"""GradSVC: units + F0 + speaker embedding -> prior ``mu`` (encoder) -> mel (score or flow decoder).

Frames are 10 ms (100 Hz) throughout: units [B, T, 256] already repeated x2 from HuBERT's 50 Hz, F0 [B, T] in Hz
(0 = unvoiced), speaker embedding [B, 256], mel [B, 100, T] (natural-log mel of 32 kHz audio, hop 320).
``state_dict()`` keys are exactly those of the official ``gvc.pretrain.pth`` (V2 and V3 share them).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from grad.diffusion import ScoreDiffusion
from grad.encoder import PriorEncoder
from grad.estimator import UNetEstimator
from grad.estimator_cpu import CPUUNetEstimator
from grad.flow import FlowMatching
from grad.samplers import NoiseSource, as_noise_source
from grad.ssim import ssim_loss
from grad.utils import f0_to_coarse, fix_len_compatibility, random_segment_starts, sequence_mask, slice_segments

log = logging.getLogger(__name__)

LOSS_KEYS = ("prior", "diff", "mel", "spk")


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, dtype=like.dtype, device=generator.device, generator=generator).to(like.device)


class GradSVC(nn.Module):
    """The acoustic model, built from ``cfg.grad`` (``common.config.GradConfig`` or its DictConfig).

    ``decoder``: "score" (V2 VP-SDE), "flow" (V3 CFM, sigma_min from the config) or "rectified" (sigma_min = 0).
    ``cpu_kernels`` (``infer.cpu_kernels``, for conversion only) builds the U-Net with its CPU inference forward
    (``grad.estimator_cpu``: faster on CPU, no gradients, the same state dict); training uses the reference.
    """

    def __init__(self, gcfg, cpu_kernels: bool = False):
        super().__init__()
        self.version = str(gcfg.version)
        self.decoder_kind = str(gcfg.decoder)
        self.n_mels = int(gcfg.n_mels)
        self.default_sampler = str(gcfg.sampler)
        self.default_steps = int(gcfg.n_timesteps)
        self.default_temperature = float(gcfg.temperature)
        self.pit_emb = nn.Embedding(int(gcfg.n_pits), int(gcfg.n_embs))
        self.spk_emb = nn.Linear(int(gcfg.spk_dim), int(gcfg.n_embs))
        self.encoder = PriorEncoder(int(gcfg.n_vecs), self.n_mels, int(gcfg.n_embs), int(gcfg.spk_dim),
                                    int(gcfg.n_enc_channels), int(gcfg.filter_channels))
        unet = CPUUNetEstimator if cpu_kernels else UNetEstimator
        estimator = unet(int(gcfg.dec_dim), self.n_mels, int(gcfg.n_embs), float(gcfg.pe_scale))
        if self.decoder_kind == "score":
            self.decoder = ScoreDiffusion(estimator, float(gcfg.beta_min), float(gcfg.beta_max))
        elif self.decoder_kind == "flow":
            self.decoder = FlowMatching(estimator, float(gcfg.sigma_min))
        elif self.decoder_kind == "rectified":
            self.decoder = FlowMatching(estimator, 0.0)
        else:
            raise ValueError(f"grad.decoder must be score, flow or rectified, got {self.decoder_kind!r}")

    # ------------------------------------------------------------------------------------------ encoder
    def _embed(self, units: torch.Tensor, f0: torch.Tensor, spk: torch.Tensor, lengths: torch.Tensor):
        t = units.shape[1]
        if t % 4:
            raise ValueError(f"encode: {t} frames is not a multiple of 4; pad with fix_len_compatibility first")
        f0_emb = self.pit_emb(f0_to_coarse(f0)).transpose(1, 2)
        spk64 = self.spk_emb(spk)
        mu, mask, prenet = self.encoder(units.transpose(1, 2), f0_emb, spk64, lengths)
        return mu, mask, prenet, spk64

    def encode(self, units: torch.Tensor, f0: torch.Tensor, spk: torch.Tensor, lengths: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """units [B, T, 256], f0 [B, T] Hz, spk [B, 256], lengths [B] int64 -> (mu [B, 100, T], mask [B, 1, T]).

        T must be a multiple of 4 (pad with ``fix_len_compatibility``); frames >= length are padding (mu is 0
        there). The prenet's instance norm sees the padding, so pad exactly as the original
        (docs/conventions.md#prenet-normalisation-sees-the-padding).
        """
        mu, mask, _, _ = self._embed(units, f0, spk, lengths)
        return mu, mask

    # ------------------------------------------------------------------------------------------ training
    def compute_loss(self, mel: torch.Tensor, lengths: torch.Tensor, units: torch.Tensor, f0: torch.Tensor,
                     spk: torch.Tensor, out_size: int | None = 200, use_decoder: bool = True,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training losses (scalars): {"prior", "diff", "mel", "spk"}.

        mel [B, 100, T], lengths [B] int64 (mel frames), units [B, T, 256], f0 [B, T] Hz, spk [B, 256]; T a
        multiple of 4 with zero padding beyond each length.
        * prior: Gaussian NLL of the mel around mu (unit variance), mean over valid frames and bands;
        * mel: 1 - SSIM(mu, mel) averaged over the whole padded batch (as the original);
        * spk: 1 - cos(true speaker, GRL classifier prediction);
        * diff: the decoder loss on one random ``fix_len_compatibility(out_size)``-frame segment per item (the
          whole sequence when ``out_size`` is None or not shorter than T); 0 when ``use_decoder`` is False
          (the original skips it during its first ``fast_epochs``).
        In training mode (``model.train()``) the units get N(0, 1) noise on valid frames (the "perturbation")
        and the mu segment fed to the decoder gets N(0, 1) noise, as in the original; ``generator`` seeds all
        draws of this call.
        """
        mask_t = sequence_mask(lengths, units.shape[1]).unsqueeze(-1).to(units.dtype)
        if self.training:
            units = units + _randn(units.shape, units, generator) * mask_t
        mu, mask, prenet, spk64 = self._embed(units, f0, spk, lengths)
        n_valid = torch.sum(mask) * self.n_mels
        prior = torch.sum(0.5 * ((mel - mu) ** 2 + math.log(2 * math.pi)) * mask) / n_valid
        mel_loss = ssim_loss(mu, mel)
        spk_pred = self.encoder.speaker(prenet, mask)
        spk_loss = torch.mean(1.0 - F.cosine_similarity(spk, spk_pred, dim=-1))
        if use_decoder:
            mel_y, mask_y, mu_y = mel, mask, mu
            if out_size is not None and fix_len_compatibility(out_size) < mel.shape[-1]:
                seg = fix_len_compatibility(out_size)
                starts = random_segment_starts(lengths, seg, generator)
                mel_y, mask_y, mu_y = (slice_segments(x, starts, seg) for x in (mel, mask, mu))
            if self.training:
                mu_y = mu_y + _randn(mu_y.shape, mu_y, generator) * mask_y
            diff, _ = self.decoder.compute_loss(mel_y, mask_y, mu_y, spk64, generator)
        else:
            diff = torch.zeros((), dtype=prior.dtype, device=prior.device)
        return {"prior": prior, "diff": diff, "mel": mel_loss, "spk": spk_loss}

    # ------------------------------------------------------------------------------------------ synthesis
    def _sampler_name(self, sampler: str | None) -> str:
        return self.default_sampler if sampler is None else sampler

    def decode(self, mu: torch.Tensor, mask: torch.Tensor, spk: torch.Tensor, steps: int | None = None,
               temperature: float | None = None, sampler: str | None = None,
               noise: NoiseSource | list | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """mu [B, 100, T], mask [B, 1, T], spk [B, 256] -> mel [B, 100, T] (T a multiple of 4, not cropped).

        Draws: the start noise (one tensor of mu's shape) then the sampler's per-step noise (``ml``: one per
        step, including the last; ``euler_sde``: one per step; the others none).
        """
        source = as_noise_source(noise, generator)
        steps = self.default_steps if steps is None else int(steps)
        temp = self.default_temperature if temperature is None else float(temperature)
        return self.decoder.sample(mu, mask, self.spk_emb(spk), steps, temp, self._sampler_name(sampler), source)

    def synthesise(self, units: torch.Tensor, f0: torch.Tensor, spk: torch.Tensor,
                   lengths: torch.Tensor | None = None, steps: int | None = None,
                   temperature: float | None = None, sampler: str | None = None,
                   noise: NoiseSource | list | None = None, generator: torch.Generator | None = None) -> dict:
        """units [B, T, 256] (100 Hz), f0 [B, T] Hz, spk [B, 256] -> {"mel", "mu": [B, 100, T], "mask": [B, 1, T]}.

        T may be any length: inputs are zero-padded to a multiple of 4 (as the original's ``gvc_main``) and the
        outputs cropped back. ``lengths`` [B] (default: all T). None for steps / temperature / sampler means the
        config's value (V3: euler, 10, 1.015; V2: ml, 20); ``steps`` 0 returns the prior ``mu`` as the mel.
        ``noise``: a ``NoiseSource`` or a list of tensors in the original's draw order (start noise
        [B, 100, T_padded], then per-step noises); the original's last draw (noise added to its unused first
        output) is not taken, so leftover tensors are ignored.
        ``generator`` seeds the draws otherwise (bit-reproducible on CPU). Runs under ``torch.inference_mode``.
        """
        param = next(self.parameters())
        with torch.inference_mode():
            units = units.to(device=param.device, dtype=param.dtype)
            f0 = f0.to(device=param.device, dtype=param.dtype)
            spk = spk.to(device=param.device, dtype=param.dtype)
            b, t, _ = units.shape
            if lengths is None:
                lengths = torch.full((b,), t, dtype=torch.long)
            lengths = lengths.to(device=param.device, dtype=torch.long)
            t_pad = fix_len_compatibility(t)
            if t_pad != t:
                units = F.pad(units, (0, 0, 0, t_pad - t))
                f0 = F.pad(f0, (0, t_pad - t))
            mu, mask = self.encode(units, f0, spk, lengths)
            source = as_noise_source(noise, generator)
            # 0 steps: the prior mu itself (what a model has learnt in its encoder-only fast_epochs; no noise drawn)
            mel = mu if steps == 0 else self.decode(mu, mask, spk, steps, temperature, sampler, source)
            if source.remaining:
                log.debug("synthesise: %d given noise tensors not used", source.remaining)
            return {"mel": mel[..., :t], "mu": mu[..., :t], "mask": mask[..., :t]}

    # ------------------------------------------------------------------------------------------ training step
    def forward(self, batch: dict[str, torch.Tensor], out_size: int | None = 200, use_decoder: bool = True,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The training losses of a ``grad.data.collate`` batch: ``compute_loss`` on its mel [B, 100, T], lengths [B],
        vec [B, T, 256], pit [B, T] Hz and spk [B, 256]. A call of the module itself, so DistributedDataParallel
        can wrap the model and synchronise its gradients."""
        return self.compute_loss(batch["mel"], batch["lengths"], batch["vec"], batch["pit"], batch["spk"],
                                 out_size=out_size, use_decoder=use_decoder, generator=generator)
