"""The converter: a song's audio -> units and F0 -> the acoustic model in crossfaded windows -> a vocoder -> audio.

``Converter`` loads the acoustic model once (HuBERT, the F0 tracker and the vocoder when first needed) and converts
any number of songs; ``Converter.convert`` returns a ``Conversion`` (audio, mel, F0) and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.audio import load_audio
from common.features import read_vec
from common.levels import conversion_warnings
from common.runtime import default_device, release_memory
from common.windows import group_equal, plan_windows
from conversion.crossfade import crossfade_weights, windows
from conversion.inputs import PITCH_SLACK, InferenceError, align, read_pitch_file, shift_f0
from conversion.progress import log_rss, progress_bar
from grad.noise import BatchNoise, PositionalNoise

log = logging.getLogger(__name__)


@dataclass
class Conversion:
    """One converted song, nothing written yet (``conversion.outputs.write_outputs`` writes it)."""

    wav: np.ndarray  # float32 [320 T] at 32 kHz
    mel: torch.Tensor  # [100, T]
    f0: np.ndarray  # [T] Hz after the shift
    vocoder: str


class Converter:
    """Loads the acoustic model now and HuBERT, the F0 tracker and the vocoder when first needed."""

    def __init__(self, model: str, config: str | None = None, device: str | None = None, vocoder: str = "bigvgan",
                 vocoder_model: str | None = None, hubert_model: str | None = None, f0_method: str | None = None,
                 half: bool = False, batch: int | None = None, f0_fix: str | None = None):
        from common.config import load_config
        from grad.checkpoint import load_gvc_model

        self.device = torch.device(default_device(device))
        overlay_cfg = load_config(config) if config else None
        self.model, self.cfg = load_gvc_model(model, cfg=overlay_cfg, device=str(self.device))
        if overlay_cfg is not None and overlay_cfg.grad.version != self.cfg.grad.version:
            raise InferenceError(f"{model}: a {self.cfg.grad.version} checkpoint (its stored config says so) given "
                                 f"with --config {config} for {overlay_cfg.grad.version}")
        self.model.eval()
        self.half = half and self.device.type == "cuda"
        self.batch = max(1, int(batch if batch is not None else self.cfg.infer.batch_windows))
        self.vocoder_kind = vocoder
        self.vocoder_model = vocoder_model
        self.hubert_model = hubert_model
        self.f0_method = f0_method or self.cfg.data.f0_method
        self.f0_fix = f0_fix  # None / "none": the tracker's F0 as is; "octave": pitch.f0.fix_octaves
        self._hubert = None
        self._vocoder = None

    # features ---------------------------------------------------------------------------------------------------
    def units(self, wav16: np.ndarray) -> np.ndarray:
        from hubert.model import DEFAULT_CHECKPOINT, compute_units, load_hubert, unit_windows

        if self._hubert is None:
            self._hubert = load_hubert(self.hubert_model or DEFAULT_CHECKPOINT, device=str(self.device))
        with progress_bar(unit_windows(len(wav16)), "units", "window") as bar:
            return compute_units(self._hubert, wav16, device=self.device, progress=bar.update)

    def f0(self, wav16: np.ndarray) -> np.ndarray:
        from pitch.f0 import apply_f0_fix, compute_f0

        with progress_bar(1, f"F0 ({self.f0_method})", "song") as bar:
            f0 = compute_f0(wav16, 16000, method=self.f0_method, device=str(self.device))
            bar.update(1)
        return apply_f0_fix(f0, self.f0_fix)

    # acoustic model ---------------------------------------------------------------------------------------------
    def acoustic(self, vec: np.ndarray, f0: np.ndarray, spk: np.ndarray, steps: int | None = None,
                 temperature: float | None = None, sampler: str | None = None, seed: int | None = None) -> torch.Tensor:
        """Units ``[T, 256]`` and F0 ``[T]`` at 100 Hz, speaker ``[256]`` -> mel ``[100, T]`` (float32, CPU)."""
        n = len(f0)
        icfg = self.cfg.infer
        noise = PositionalNoise(seed if seed is not None else int(torch.seed() % 2**62))
        spk_t = torch.from_numpy(spk).float().unsqueeze(0).to(self.device)
        acc = torch.zeros(self.cfg.grad.n_mels, n)
        wsum = torch.zeros(n)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.half else contextlib.nullcontext()
        wins = windows(n, icfg.out_chunk, icfg.hop_frame)
        n_steps = self.model.default_steps if steps is None else int(steps)
        bar = progress_bar(len(wins) * n_steps, "acoustic model", "step")  # windows x decoder steps
        for group in group_equal(wins, self.batch, length=lambda w: w[1] - w[0]):
            v = torch.from_numpy(np.stack([vec[s:e] for s, e in group])).float().to(self.device)
            p = torch.from_numpy(np.stack([f0[s:e] for s, e in group])).float().to(self.device)
            with autocast:
                out = self.model.synthesise(v, p, spk_t.expand(len(group), -1), steps=steps,
                                            temperature=temperature, sampler=sampler,
                                            noise=BatchNoise([noise.at(s) for s, _ in group]))
            mels = out["mel"].float().cpu()
            for i, (start, end) in enumerate(group):
                w = torch.from_numpy(crossfade_weights(start, end, n, icfg.hop_frame))
                acc[:, start:end] += mels[i, :, : end - start] * w
                wsum[start:end] += w
            del out, mels
            release_memory()
            bar.update(len(group) * n_steps)
        bar.close()
        return acc / wsum.clamp_min(1e-6)

    # vocoder ----------------------------------------------------------------------------------------------------
    def _bigvgan(self):
        from bigvgan.model import DEFAULT_CHECKPOINT, load_bigvgan

        if self._vocoder is None:
            self._vocoder = load_bigvgan(self.vocoder_model or DEFAULT_CHECKPOINT, device=str(self.device))
        return self._vocoder

    def vocode(self, mel: torch.Tensor, f0: np.ndarray, seed: int | None = None) -> np.ndarray:
        """mel ``[100, T]`` + F0 ``[T]`` Hz -> wav float32 ``[320 T]`` at 32 kHz."""
        if self.vocoder_kind == "griffinlim":
            from bigvgan.griffinlim import griffinlim_vocode

            return griffinlim_vocode(mel, self.cfg.data)
        if self.vocoder_kind == "world":
            from bigvgan.world import world_vocode

            return world_vocode(mel, f0, self.cfg.data, self.cfg.infer.vocoder_chunk, self.cfg.infer.vocoder_overlap)
        from bigvgan.model import vocode

        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
        icfg = self.cfg.infer
        n_windows = len(plan_windows(mel.shape[1], icfg.vocoder_chunk, icfg.vocoder_overlap)) if mel.shape[1] else 0
        with progress_bar(n_windows, "vocoder", "window") as bar:
            return vocode(self._bigvgan(), mel.to(self.device), torch.from_numpy(f0).float().to(self.device),
                          chunk=icfg.vocoder_chunk, overlap=icfg.vocoder_overlap, noise_generator=gen,
                          batch=self.batch, progress=bar.update)

    def pitch_wav(self, f0: np.ndarray, seed: int | None = None) -> np.ndarray:
        """The F0 check wav the original writes (the vocoder's harmonic source alone), int16 at 32 kHz. Written
        whatever the vocoder: the NSF source has no learnt weights (its merge weights are fixed constants), so
        without the NSF-BigVGAN file the same source is built alone."""
        from bigvgan.model import GeneratorConfig, source_wav
        from bigvgan.nsf import HarmonicSource

        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
        if self.vocoder_kind == "bigvgan":
            source, hop = self._bigvgan().m_source, self._bigvgan().hop_length
        else:
            gcfg = GeneratorConfig.from_data_config(self.cfg.data)
            source = HarmonicSource(gcfg.sampling_rate, gcfg.harmonic_num, gcfg.sine_amp, gcfg.noise_std,
                                    gcfg.voiced_threshold).to(self.device)
            hop = gcfg.hop_length
        # in windows: the whole-song excitation held gigabytes for a few minutes of song (the same samples)
        out = source_wav(source, hop, torch.from_numpy(f0).float(), gen, self.cfg.infer.vocoder_chunk, self.device)
        release_memory()
        return out

    # one file ---------------------------------------------------------------------------------------------------
    def convert(self, wave: str, spk: np.ndarray, vec_path: str | None = None, pit_path: str | None = None,
                shift: float | Callable[[np.ndarray, str], float] = 0.0, steps: int | None = None,
                temperature: float | None = None, sampler: str | None = None, seed: int | None = None) -> Conversion:
        """The song ``wave`` (any rate; read at 16 kHz) sung by ``spk`` ``[256]``. Units from ``vec_path``
        (``.vec.npy``, 50 Hz) or HuBERT, F0 from ``pit_path`` (CSV or ``.pit.npy``, 100 Hz) or the tracker; F0
        shifted by ``shift`` semitones (or by ``shift(f0, wave)``, chosen from the song's own F0: ``--shift auto``,
        ``pitch.key.AutoShift``); ``steps``/``temperature``/``sampler`` default to the model's; ``seed`` makes
        the output reproducible bit for bit. Raises ``InferenceError`` (one line naming the file) on bad input."""
        wav16 = None
        if vec_path is None or pit_path is None:
            wav16 = load_audio(wave, 16000)
        if vec_path is not None:
            if not Path(vec_path).is_file():
                raise InferenceError(f"{vec_path}: units file not found")
            vec50 = read_vec(vec_path)
            if not np.isfinite(vec50).all():
                raise InferenceError(f"{vec_path}: units contain NaN or infinite values")
        else:
            vec50 = self.units(wav16)
            log_rss("units")
        f0 = read_pitch_file(pit_path) if pit_path is not None else self.f0(wav16)
        del wav16
        release_memory()
        log_rss("f0")
        if vec_path is not None and pit_path is None and abs(2 * len(vec50) - len(f0)) > PITCH_SLACK:
            raise InferenceError(f"{vec_path}: {len(vec50)} unit frames ({len(vec50) / 50:.2f} s) for "
                                 f"{len(f0) / 100:.2f} s of audio in {wave}: units of another song?")
        vec, f0 = align(vec50, f0, pit_path)
        if len(f0) == 0:
            raise InferenceError(f"{wave}: too short to convert (no complete 20 ms frame)")
        f0 = shift_f0(f0, shift(f0, wave) if callable(shift) else shift)
        release_memory()
        mel = self.acoustic(vec, f0, spk, steps, temperature, sampler, seed)
        log_rss("acoustic")
        if not torch.isfinite(mel).all():
            raise InferenceError(f"{wave}: the acoustic model's output is not finite (nothing written)")
        wav = self.vocode(mel, f0, seed)  # (vocode releases memory after each of its windows)
        release_memory()
        log_rss("vocoder")
        if not np.isfinite(wav).all():
            raise InferenceError(f"{wave}: the vocoder's output is not finite (nothing written)")
        for problem in conversion_warnings(mel, wav, self.cfg.data):  # a blast says why (untrained model, ...)
            log.warning("%s: %s", wave, problem)
        return Conversion(wav=wav, mel=mel, f0=f0, vocoder=self.vocoder_kind)
