"""Harmonic-plus-noise excitation of the neural source-filter (NSF) vocoder.

Wang, Takaki, Yamagishi, "Neural source-filter waveform models" (2019), hn-NSF source; the variant of
PlayVoice's NSF-BigVGAN: 11 sines (f0 .. 11 f0) of amplitude 0.1, zeroed where unvoiced, plus Gaussian noise
(std 0.003 voiced, 0.1 / 3 unvoiced), merged by FIXED weights ``merge_w`` / ``merge_b`` and a tanh.

The original draws two random tensors per call (``torch.rand`` for the initial phases, fundamental forced to 0,
and ``torch.randn_like`` for the additive noise); here the caller passes them (``rand_ini``, ``sine_noise``) or a
``torch.Generator`` to draw them from. ``phase_offset`` lets a chunked caller continue the sine phases of the
previous chunk exactly (see ``harmonic_phase_offset``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# constructor constants of the original SourceModuleHnNSF (also stored in the official file as buffers)
MERGE_W = (0.2942, -0.2243, 0.0033, -0.0056, -0.0020, -0.0046, 0.0221, -0.0083, -0.0241, -0.0036, -0.0581)
MERGE_B = (0.0008,)


def upsample_f0(f0: torch.Tensor, hop: int) -> torch.Tensor:
    """Frame F0 ``(B, T)`` -> sample F0 ``(B, T * hop)`` by repetition (``nn.Upsample`` 'nearest' of the original)."""
    return f0.repeat_interleave(hop, dim=-1)


def harmonic_radians(f0_up: torch.Tensor, n_harmonics: int, sampling_rate: int) -> torch.Tensor:
    """Per-sample phase increments in cycles, ``(B, N)`` Hz -> ``(B, N, H)`` float in [0, 1): ``(h f0 / sr) mod 1``."""
    harmonics = torch.arange(1, n_harmonics + 1, device=f0_up.device, dtype=f0_up.dtype)
    return (f0_up[..., None] * harmonics / sampling_rate) % 1


def harmonic_phase_offset(f0: torch.Tensor, hop: int, n_harmonics: int, sampling_rate: int) -> torch.Tensor:
    """Accumulated sine phase (cycles, mod 1) after the frames ``f0`` ``(B, T)`` Hz: ``(B, H)`` float64.

    Each frame adds ``hop`` samples of ``harmonic_radians``; summing per frame (not per sample) in float64 makes the
    phase at the start of any chunk cheap and exact, so chunked vocoding has no phase jumps at the seams.
    """
    if f0.shape[-1] == 0:
        return torch.zeros(f0.shape[0], n_harmonics, dtype=torch.float64, device=f0.device)
    rad = harmonic_radians(f0, n_harmonics, sampling_rate).double()  # float32 increments as the sample path uses
    return (hop * rad).sum(dim=1) % 1


class HarmonicSource(nn.Module):
    """hn-NSF source (``m_source`` of the generator): sample F0 ``(B, N)`` Hz -> excitation ``(B, N, 1)`` in (-1, 1).

    Buffers ``merge_w`` ``(1, H)`` and ``merge_b`` ``(1,)`` are the official constants (loaded from the file too).
    """

    def __init__(
        self,
        sampling_rate: int = 32000,
        harmonic_num: int = 10,
        sine_amp: float = 0.1,
        noise_std: float = 0.003,
        voiced_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if harmonic_num + 1 != len(MERGE_W):
            raise ValueError(f"the official merge weights have {len(MERGE_W)} harmonics, got {harmonic_num + 1}")
        self.sampling_rate = sampling_rate
        self.n_harmonics = harmonic_num + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.register_buffer("merge_w", torch.tensor([MERGE_W], dtype=torch.float32))
        self.register_buffer("merge_b", torch.tensor(MERGE_B, dtype=torch.float32))

    def draw_noise(
        self, batch: int, n_samples: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The original's two random tensors: ``rand_ini`` ``(B, H)`` U[0, 1), ``sine_noise`` ``(B, N, H)`` N(0, 1)."""
        gen_device = generator.device if generator is not None else None
        rand_ini = torch.rand(batch, self.n_harmonics, generator=generator, device=gen_device)
        sine_noise = torch.randn(batch, n_samples, self.n_harmonics, generator=generator, device=gen_device)
        return rand_ini.to(device), sine_noise.to(device)

    def sines(
        self, f0_up: torch.Tensor, rand_ini: torch.Tensor, phase_offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pure harmonic sines ``(B, N, H)`` of amplitude ``sine_amp`` (not yet gated by voicing)."""
        rad = harmonic_radians(f0_up, self.n_harmonics, self.sampling_rate)
        start = rand_ini.to(rad.dtype).clone()
        start[:, 0] = 0  # the fundamental always starts at phase 0, as in the original
        if phase_offset is not None:
            start = ((start.double() + phase_offset.to(start.device)) % 1).to(rad.dtype)
        rad[:, 0, :] = rad[:, 0, :] + start
        # Cumulative phase without float32 growth (the original's trick): subtract 1 wherever the running
        # fractional phase wraps, so the cumsum stays in [0, 2) however long the signal is.
        frac = torch.cumsum(rad, dim=1) % 1
        wrapped = (frac[:, 1:, :] - frac[:, :-1, :]) < 0
        shift = torch.zeros_like(rad)
        shift[:, 1:, :] = wrapped * -1.0
        return torch.sin(torch.cumsum(rad + shift, dim=1) * 2 * math.pi) * self.sine_amp

    def sines_piece(
        self, f0_up: torch.Tensor, rand_ini: torch.Tensor, carry: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``sines`` of a whole signal, one consecutive piece ``(B, n)`` at a time: -> sines ``(B, n, H)``, carry.

        Pass ``carry=None`` for the first piece and the returned carry to the next. The carry holds what the whole
        signal's two cumsums and wrap test need from earlier pieces (their float64 running sums, as torch's CPU
        cumsum accumulates float32 in float64, and the last wrapped phase), so on the CPU the pieces joined equal
        ``sines(whole)`` bit for bit while memory stays that of one piece.
        """
        rad = harmonic_radians(f0_up, self.n_harmonics, self.sampling_rate)
        b, _, h = rad.shape
        if carry is None:
            start = rand_ini.to(rad.dtype).clone()
            start[:, 0] = 0  # as sines()
            rad[:, 0, :] = rad[:, 0, :] + start
            zero = torch.zeros(b, 1, h, dtype=torch.float64, device=rad.device)
            acc1, acc2, last_frac = zero, zero, None
        else:
            acc1, acc2, last_frac = carry
        run1 = rad.double()
        run1[:, :1] += acc1
        run1 = torch.cumsum(run1, dim=1)
        frac = run1.float() % 1
        joined = frac if last_frac is None else torch.cat([last_frac, frac], dim=1)
        shift = torch.zeros_like(rad)
        shift[:, rad.shape[1] - joined.shape[1] + 1:, :] = ((joined[:, 1:, :] - joined[:, :-1, :]) < 0) * -1.0
        run2 = (rad + shift).double()
        run2[:, :1] += acc2
        run2 = torch.cumsum(run2, dim=1)
        out = torch.sin(run2.float() * 2 * math.pi) * self.sine_amp
        return out, (run1[:, -1:].clone(), run2[:, -1:].clone(), frac[:, -1:].clone())

    def excitation(self, sines: torch.Tensor, f0_up: torch.Tensor, sine_noise: torch.Tensor) -> torch.Tensor:
        """Harmonic sines ``(B, N, H)`` gated by voicing, plus noise, merged -> ``(B, N, 1)`` (the end of forward)."""
        uv = (f0_up > self.voiced_threshold).to(sines.dtype)[..., None]
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        sines = sines * uv + noise_amp * sine_noise.to(sines.dtype)
        return torch.tanh(F.linear(sines, self.merge_w.to(sines.dtype)) + self.merge_b.to(sines.dtype))

    def forward(
        self,
        f0_up: torch.Tensor,
        rand_ini: torch.Tensor,
        sine_noise: torch.Tensor,
        phase_offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``f0_up`` ``(B, N)`` Hz at the audio rate, ``rand_ini`` ``(B, H)``, ``sine_noise`` ``(B, N, H)`` N(0, 1),
        optional ``phase_offset`` ``(B, H)`` cycles -> ``(B, N, 1)``."""
        return self.excitation(self.sines(f0_up, rand_ini, phase_offset), f0_up, sine_noise)
