"""NSF-BigVGAN generator (PlayVoice's neural source-filter BigVGAN at 32 kHz), its official loader and vocoding.

Input: log-mel ``(B, 100, T)`` (``common.mel``, 10 ms frames) and F0 ``(B, T)`` in Hz (0 = unvoiced); output:
audio ``(B, 1, 320 T)`` at 32 kHz in (-1, 1). The architecture is fixed by ``nsf_bigvgan_pretrain_32K.pth``
(keys and shapes: ``tests/fixtures/reference/manifests/nsf_bigvgan_generator.json``):

    mel -> conv_pre (k7, 320 ch, weight norm) -> Mish
    6 x [ConvTranspose (rates 5,4,2,2,2,2; weight norm) + noise_conv(harmonic source)
         -> mean of 3 AMP blocks (kernels 3,7,11; dilations 1,3,5; anti-aliased SnakeBeta)]
    -> anti-aliased SnakeBeta -> conv_post (k7, no bias) -> tanh

The harmonic source (``bigvgan.nsf``) enters every stage through ``noise_convs[i]``, a strided conv from the audio
rate down to that stage's rate. Weight norm is kept as ``weight_g`` / ``weight_v`` pairs (``bigvgan.weightnorm``) so
official files load as they are; ``remove_weight_norm()`` folds them (about as accurate, and faster).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigvgan.alias import SnakeAlias
from bigvgan.chunks import synthesize_chunked
from bigvgan.generator_cpu import decode_cpu, usable
from bigvgan.nsf import HarmonicSource, harmonic_phase_offset, upsample_f0
from bigvgan.weightnorm import WNConv1d, WNConvTranspose1d
from common.checkpoint import CheckpointError, load_checkpoint, load_state_report, strip_prefix
from common.runtime import release_memory
from common.windows import Window

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth"
MAX_WAV_VALUE = 32768.0


@dataclass(frozen=True)
class GeneratorConfig:
    """Constants of the official generator (``bigvgan/configs/nsf_bigvgan.yaml`` of the original).

    ``mel_channels`` and ``sampling_rate`` come from ``cfg.data`` (``from_data_config``); the rest is fixed by the
    checkpoint's shapes.
    """

    mel_channels: int = 100
    sampling_rate: int = 32000
    upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (15, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 320
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    harmonic_num: int = 10  # 11 sines: f0 .. 11 f0
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 0.0
    alias_ratio: int = 2  # SnakeBeta runs at twice the stage rate
    alias_kernel_size: int = 12

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame (the product of the upsampling rates, 320)."""
        return math.prod(self.upsample_rates)

    @classmethod
    def from_data_config(cls, data_cfg) -> GeneratorConfig:
        """Mel size and rate from ``cfg.data``; its hop must equal the generator's total upsampling."""
        cfg = cls(mel_channels=int(data_cfg.mel_channels), sampling_rate=int(data_cfg.sampling_rate))
        if int(data_cfg.hop_length) != cfg.hop_length:
            raise ValueError(f"data.hop_length {data_cfg.hop_length} != the vocoder's upsampling {cfg.hop_length}")
        return cfg


class AMPBlock(nn.Module):
    """Anti-aliased multi-periodicity residual block: ``(B, C, L)`` -> ``(B, C, L)``.

    For each dilation d: ``x += conv2(act2(conv1_d(act1(x))))`` with SnakeAlias activations (BigVGAN AMPBlock1;
    ``activations[2i]`` precedes ``convs1[i]``, ``activations[2i + 1]`` precedes ``convs2[i]``).
    """

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], ratio: int, alias_kernel: int):
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, 1, dilation=d, padding=(kernel_size - 1) * d // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, 1, dilation=1, padding=(kernel_size - 1) // 2)
            for _ in dilations
        )
        self.activations = nn.ModuleList(SnakeAlias(channels, ratio, alias_kernel) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            xt = c1(self.activations[2 * i](x))
            xt = c2(self.activations[2 * i + 1](xt))
            x = x + xt
        return x


class Generator(nn.Module):
    """NSF-BigVGAN: mel ``(B, 100, T)`` + F0 ``(B, T)`` Hz -> audio ``(B, 1, 320 T)`` at 32 kHz (tanh output).

    ``noise = (rand_ini (B, 11), sine_noise (B, 320 T, 11))`` replaces the original's two RNG draws (initial
    harmonic phases, U[0, 1) with the fundamental's forced to 0; additive N(0, 1) source noise). With
    ``noise=None`` they are drawn from ``generator`` (or torch's global RNG). No noise is ever added to the mel
    (the original's ``train=True`` perturbation is a training-time augmentation).
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        cfg = config or GeneratorConfig()
        if len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        self.config = cfg
        self.hop_length = cfg.hop_length
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        c0 = cfg.upsample_initial_channel
        self.conv_pre = WNConv1d(cfg.mel_channels, c0, 7, 1, padding=3)
        self.m_source = HarmonicSource(
            cfg.sampling_rate, cfg.harmonic_num, cfg.sine_amp, cfg.noise_std, cfg.voiced_threshold
        )
        self.ups = nn.ModuleList()
        self.noise_convs = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        rates = cfg.upsample_rates
        for i, (u, k) in enumerate(zip(rates, cfg.upsample_kernel_sizes)):
            ch = c0 // 2 ** (i + 1)
            self.ups.append(WNConvTranspose1d(c0 // 2**i, ch, k, u, padding=(k - u) // 2))
            # the source (audio rate) is brought down to this stage's rate by a strided conv
            stride = math.prod(rates[i + 1:])
            if stride > 1:
                self.noise_convs.append(nn.Conv1d(1, ch, kernel_size=2 * stride, stride=stride, padding=stride // 2))
            else:
                self.noise_convs.append(nn.Conv1d(1, ch, kernel_size=1))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(AMPBlock(ch, rk, tuple(rd), cfg.alias_ratio, cfg.alias_kernel_size))
        ch = c0 // 2 ** len(rates)
        self.activation_post = SnakeAlias(ch, cfg.alias_ratio, cfg.alias_kernel_size)
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        # float32 inference on CPU: channels-last, polyphase resampling (bigvgan.generator_cpu), ~1.6x faster there
        self.fast_cpu = True

    # -- the source ----------------------------------------------------------------------------------------------

    def harmonic_source(
        self,
        f0: torch.Tensor,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        phase_offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """F0 ``(B, T)`` Hz -> NSF excitation ``(B, 320 T, 1)`` (``m_source`` output of the original).

        ``phase_offset`` ``(B, 11)`` (cycles) continues the sines of earlier frames (``harmonic_phase_offset``).
        """
        f0_up = upsample_f0(f0, self.hop_length)
        if noise is None:
            noise = self.m_source.draw_noise(f0.shape[0], f0_up.shape[1], generator, f0.device)
        rand_ini, sine_noise = noise
        expected = (f0_up.shape[0], f0_up.shape[1], self.m_source.n_harmonics)
        if tuple(sine_noise.shape) != expected or tuple(rand_ini.shape) != expected[::2]:
            raise ValueError(
                f"noise shapes {tuple(rand_ini.shape)}, {tuple(sine_noise.shape)} != {expected[::2]}, {expected}"
            )
        return self.m_source(f0_up, rand_ini.to(f0.device), sine_noise.to(f0.device), phase_offset)

    # -- the filter ----------------------------------------------------------------------------------------------

    def decode(self, mel: torch.Tensor, har_source: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mel ``(B, 100, T)`` + excitation ``(B, 320 T, 1)`` -> ``{"conv_pre_out" (B, 320, T),
        "conv_post_out" (B, 1, 320 T) (before tanh), "audio" (B, 1, 320 T)}``."""
        if self.fast_cpu and usable(mel):
            return decode_cpu(self, mel, har_source)
        source = har_source.transpose(1, 2)
        x = self.conv_pre(mel)
        conv_pre_out = x
        x = x * torch.tanh(F.softplus(x))  # Mish
        for i, (up, noise_conv) in enumerate(zip(self.ups, self.noise_convs)):
            x = up(x) + noise_conv(source)
            blocks = self.resblocks[i * self.num_kernels: (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return {"conv_pre_out": conv_pre_out, "conv_post_out": x, "audio": torch.tanh(x)}

    def forward_intermediates(
        self,
        mel: torch.Tensor,
        f0: torch.Tensor,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """``decode`` outputs plus ``"har_source"`` ``(B, 320 T, 1)``."""
        self._check_inputs(mel, f0)
        har = self.harmonic_source(f0, noise, generator)
        return {"har_source": har, **self.decode(mel, har)}

    def forward(
        self,
        mel: torch.Tensor,
        f0: torch.Tensor,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mel ``(B, 100, T)``, F0 ``(B, T)`` Hz -> audio ``(B, 1, 320 T)`` in (-1, 1) at 32 kHz."""
        return self.forward_intermediates(mel, f0, noise, generator)["audio"]

    def pitch2wav(
        self,
        f0: torch.Tensor,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The excitation alone as int16 ``(B, 320 T)``: an audible check of the F0 (the original's ``pitch2wav``)."""
        return to_int16(self.harmonic_source(f0, noise, generator)[..., 0])

    def remove_weight_norm(self) -> Generator:
        """Fold every ``weight_g`` / ``weight_v`` pair into a plain weight (in place; returns self)."""
        for module in self.modules():
            if isinstance(module, (WNConv1d, WNConvTranspose1d)):
                module.fold()
        return self

    def _check_inputs(self, mel: torch.Tensor, f0: torch.Tensor) -> None:
        if mel.dim() != 3 or mel.shape[1] != self.config.mel_channels:
            raise ValueError(f"mel must be (B, {self.config.mel_channels}, T), got {tuple(mel.shape)}")
        if f0.dim() != 2 or f0.shape[0] != mel.shape[0] or f0.shape[1] != mel.shape[2]:
            raise ValueError(f"f0 must be (B, T) matching mel {tuple(mel.shape)}, got {tuple(f0.shape)}")


def to_int16(audio: torch.Tensor) -> torch.Tensor:
    """Float audio in [-1, 1] -> int16: ``(32768 x).clamp(-32768, 32767)`` truncated toward zero (the original)."""
    return (MAX_WAV_VALUE * audio).clamp(-MAX_WAV_VALUE, MAX_WAV_VALUE - 1).short()


def load_bigvgan(
    path: str | Path = DEFAULT_CHECKPOINT,
    device: str | torch.device = "cpu",
    fold_weight_norm: bool = True,
    config: GeneratorConfig | None = None,
) -> Generator:
    """The generator from an official ``nsf_bigvgan_pretrain_32K.pth`` (``{'model_g': state_dict, ...}``).

    Only ``model_g`` is read (``model_d``, optimizer states etc. are ignored). Every key of the model must be in the
    file with the right shape (``CheckpointError`` otherwise); extra keys are logged. Returns the model in eval mode
    on ``device``, with weight norm folded unless ``fold_weight_norm=False``.
    """
    ckpt = load_checkpoint(path, kind="bigvgan")
    if not isinstance(ckpt, Mapping) or "model_g" not in ckpt:
        found = ", ".join(sorted(map(str, ckpt))[:5]) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an NSF-BigVGAN checkpoint: no 'model_g' entry (found: {found})")
    state = ckpt["model_g"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model_g' is not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # a DataParallel save
        state = strip_prefix(state, "module.")
    model = Generator(config)
    load_state_report(model, state, str(path))
    if fold_weight_norm:
        model.remove_weight_norm()
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------------------
# long inputs

# Source noise is drawn in blocks of this many frames, in order, so a seeded vocoding does not depend on `chunk`.
_NOISE_BLOCK_FRAMES = 200


class _BlockNoise:
    """Lazily drawn N(0, 1) source noise ``(1, samples, H)`` over the whole song, in fixed blocks, recent ones kept."""

    def __init__(self, hop: int, n_harmonics: int, generator: torch.Generator | None) -> None:
        self.block = _NOISE_BLOCK_FRAMES * hop
        self.n_harmonics = n_harmonics
        self.generator = generator
        self.blocks: dict[int, torch.Tensor] = {}
        self.drawn = 0

    def get(self, start: int, end: int) -> torch.Tensor:
        """Noise for audio samples ``[start, end)`` (requests must not go back before an earlier request's start)."""
        first, last = start // self.block, (end - 1) // self.block
        while self.drawn <= last:
            device = self.generator.device if self.generator is not None else None
            self.blocks[self.drawn] = torch.randn(
                1, self.block, self.n_harmonics, generator=self.generator, device=device
            )
            self.drawn += 1
        for k in [k for k in self.blocks if k < first]:
            del self.blocks[k]
        joined = torch.cat([self.blocks[k] for k in range(first, last + 1)], dim=1)
        offset = first * self.block
        return joined[:, start - offset: end - offset]


def pitch_wav(generator: Generator, f0: torch.Tensor, noise_generator: torch.Generator | None = None,
              chunk: int = 2400) -> np.ndarray:
    """F0 ``(T,)`` Hz -> the excitation alone, int16 ``(320 T,)`` at 32 kHz, ``chunk`` frames at a time.

    The same samples as ``generator.pitch2wav(f0[None], generator=noise_generator)`` of the whole song (bit for bit
    on the CPU: the noise is drawn from the generator in the same order, the sine phases carried exactly,
    ``HarmonicSource.sines_piece``), in memory that does not grow with the song (the whole-song call holds a dozen
    ``(320 T, 11)`` tensors: gigabytes for a few minutes).
    """
    device = next(generator.parameters()).device
    return source_wav(generator.m_source, generator.hop_length, f0, noise_generator, chunk, device)


def source_wav(source: HarmonicSource, hop: int, f0: torch.Tensor, noise_generator: torch.Generator | None = None,
               chunk: int = 2400, device: torch.device | str = "cpu") -> np.ndarray:
    """``pitch_wav`` from the NSF source alone (it has no learnt weights: its merge weights are fixed constants), so
    the F0 check wav needs no NSF-BigVGAN file; ``hop`` samples per F0 frame, the source on ``device``."""
    if f0.dim() != 1:
        raise ValueError(f"pitch_wav expects f0 (T,), got {tuple(f0.shape)}")
    f0 = f0.to(device=device, dtype=torch.float32)
    gen_device = noise_generator.device if noise_generator is not None else None
    # draw_noise's order: the initial phases, then the noise sample after sample (whole-song draws of 320 x 11
    # values per frame equal the same draws made piece after piece: CPU normal_ fills in blocks of 16)
    rand_ini = torch.rand(1, source.n_harmonics, generator=noise_generator, device=gen_device).to(device)
    out = np.empty(f0.shape[0] * hop, dtype=np.int16)
    carry = None
    with torch.inference_mode():
        for a in range(0, f0.shape[0], max(1, chunk)):
            f0_up = upsample_f0(f0[None, a: a + chunk], hop)
            noise = torch.randn(1, f0_up.shape[1], source.n_harmonics, generator=noise_generator, device=gen_device)
            sines, carry = source.sines_piece(f0_up, rand_ini, carry)
            excitation = source.excitation(sines, f0_up, noise.to(device))
            out[a * hop: a * hop + f0_up.shape[1]] = to_int16(excitation[0, :, 0]).cpu().numpy()
            del sines, excitation, noise, f0_up
    return out


def vocode(
    generator: Generator,
    mel: torch.Tensor,
    f0: torch.Tensor,
    chunk: int = 2400,
    overlap: int = 32,
    noise_generator: torch.Generator | None = None,
    add_noise: bool = True,
    batch: int = 1,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Mel ``(100, T)`` + F0 ``(T,)`` Hz -> float32 audio ``(320 T,)`` at 32 kHz, in bounded memory.

    Windows of ``chunk`` frames plus ``overlap`` context frames each side are synthesised one at a time and
    crossfaded (``bigvgan.chunks``). The sine phases are continued exactly across windows (their offset at a window
    start is summed per frame over the whole song), the initial phases are drawn once, and the source noise is drawn
    in fixed blocks over the whole song, so the result does not depend on ``chunk`` away from the seams (and not at
    all where the generator's receptive field fits in ``overlap / 2`` frames). ``add_noise=False`` uses zero initial
    phases and zero source noise (deterministic). ``batch`` > 1 renders that many equal-length windows at once (the
    same noise and phases as one at a time: the same audio, more memory; for GPUs). ``progress(k)`` is called after
    each ``k`` windows rendered (``common.windows.plan_windows`` lists them).
    """
    if mel.dim() != 2 or f0.dim() != 1 or mel.shape[1] != f0.shape[0]:
        raise ValueError(f"vocode expects mel (n_mels, T) and f0 (T,), got {tuple(mel.shape)} and {tuple(f0.shape)}")
    device = next(generator.parameters()).device
    dtype = next(generator.parameters()).dtype
    hop, n_h = generator.hop_length, generator.m_source.n_harmonics
    n_frames = mel.shape[1]
    mel = mel.to(device=device, dtype=dtype)
    f0 = f0.to(device=device, dtype=torch.float32)  # the sine phases stay float32 even for a half-precision model
    if add_noise:
        gen_device = noise_generator.device if noise_generator is not None else None
        rand_ini = torch.rand(1, n_h, generator=noise_generator, device=gen_device)
        block_noise = _BlockNoise(hop, n_h, noise_generator)
    else:
        rand_ini = torch.zeros(1, n_h)

    def render(ws: list[Window]) -> list[np.ndarray]:
        n_samples = (ws[0].win_end - ws[0].win_start) * hop  # equal for every window of the group
        f0_w = torch.stack([f0[w.win_start: w.win_end] for w in ws])
        if add_noise:  # drawn window after window, as one at a time would
            sine_noise = torch.cat([block_noise.get(w.win_start * hop, w.win_end * hop) for w in ws])
        else:
            sine_noise = torch.zeros(len(ws), n_samples, n_h)
        offset = torch.cat([harmonic_phase_offset(f0[None, : w.win_start], hop, n_h,
                                                  generator.m_source.sampling_rate) for w in ws])
        mel_w = torch.stack([mel[:, w.win_start: w.win_end] for w in ws])
        with torch.inference_mode():
            har = generator.harmonic_source(f0_w, (rand_ini.expand(len(ws), -1).to(device), sine_noise.to(device)),
                                            phase_offset=offset)
            audio = generator.decode(mel_w, har.to(dtype))["audio"]
        out = list(audio[:, 0].float().cpu().numpy())
        del audio, har
        release_memory()
        if progress is not None:
            progress(len(ws))
        return out

    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    return synthesize_chunked(n_frames, hop, chunk, overlap, render, batch)
