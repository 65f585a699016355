"""Convert a song (or a folder of songs) to another singer's voice, every stage in one process.

    python gvc_inference.py --model gvc.pth --spk ./data_gvc/singer/your_singer.spk.npy --wave test.wav --shift 0
    python gvc_inference.py --model gvc.pth --spk singer.spk.npy --wave test.wav --vec test.vec.npy --pit test.csv

Stages: HuBERT-soft units (or ``--vec``) and F0 (or an edited ``--pit`` CSV) from the 16 kHz input -> the acoustic
model in windows of ``infer.out_chunk`` frames crossfaded over their context frames -> NSF-BigVGAN (or the
Griffin-Lim preview) in crossfaded windows -> ``--out`` (32 kHz), the F0 check wav and a mel image beside it.
Each model is loaded once, also in folder mode. This module imports nothing from the trainer. On a terminal each stage
shows a progress bar on stderr (folder mode: songs done of all); memory does not grow with the song's length beyond
its features, mel and audio (bench/bench_cli_memory.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.audio import AudioError, list_audio, load_audio, write_wav
from common.checkpoint import CheckpointError
from common.config import ConfigError
from common.features import FeatureError, read_vec
from common.io import DiskFullError
from common.levels import conversion_warnings
from common.runtime import default_device, drop_primitive_cache, release_memory, tune_allocator
from grad.samplers import NoiseSource

log = logging.getLogger("gvc_inference")

DEFAULT_OUT = "gvc_out.wav"
MAX_SHIFT = 24  # semitones; beyond two octaves the F0 leaves the model's 50-1100 Hz pitch range
PITCH_SLACK = 6  # our F0 track is ~3 frames longer than 2 x units; more than this means a file of another audio


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    """One stage's bar on stderr; hidden when stderr is not a terminal (tqdm's ``disable=None``)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=None)


class InferenceError(ValueError):
    """A bad input of the conversion (one line, names the file)."""


def log_rss(stage: str) -> None:
    """With ``GVC_RSS_LOG=1``: one line ``rss <stage> <current MB> <peak MB>`` on stderr (bench/bench_cli_memory.py)."""
    import os

    if os.environ.get("GVC_RSS_LOG") != "1":
        return
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return
    kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
          if k in ("VmRSS", "VmHWM")}
    print(f"rss {stage} {kb['VmRSS'] / 1024:.1f} {kb['VmHWM'] / 1024:.1f}", file=sys.stderr, flush=True)


@dataclass
class Conversion:
    wav: np.ndarray  # float32 [320 T] at 32 kHz
    mel: torch.Tensor  # [100, T]
    f0: np.ndarray  # [T] Hz after the shift
    vocoder: str


# ----------------------------------------------------------------------------------------------------------------
# pure helpers (tested directly)


def shift_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """``f0 * 2^(k/12)``; unvoiced frames stay 0. Refuses shifts beyond +-MAX_SHIFT semitones."""
    if not np.isfinite(semitones) or abs(semitones) > MAX_SHIFT:
        raise InferenceError(f"--shift {semitones}: must be within +-{MAX_SHIFT} semitones")
    return np.asarray(f0, dtype=np.float64) * 2.0 ** (semitones / 12.0)


def align(vec50: np.ndarray, f0: np.ndarray, pit_from_user: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Units ``[T_vec, 256]`` at 50 Hz and F0 ``[T_pit]`` at 100 Hz -> both ``T`` frames at 100 Hz.

    Units are repeated x2 (a, a, b, b, ...). Our own F0 track is cut to the shorter, as the original. A user's F0
    file (``pit_from_user`` names it) of a clearly different length is padded with unvoiced frames or cut to the
    audio's length, with a warning, so the output keeps the input's duration.
    """
    vec = np.repeat(vec50, 2, axis=0)
    if pit_from_user is not None and abs(len(f0) - len(vec)) > PITCH_SLACK:
        log.warning("%s: %d F0 frames for %d frames of audio; %s to the audio's length", pit_from_user, len(f0),
                    len(vec), "padded with unvoiced frames" if len(f0) < len(vec) else "cut")
        f0 = np.concatenate([f0, np.zeros(max(0, len(vec) - len(f0)))])[: len(vec)]
    n = min(len(vec), len(f0))
    return vec[:n], np.asarray(f0[:n], dtype=np.float64)


def windows(n: int, chunk: int, context: int) -> list[tuple[int, int]]:
    """Input windows ``[start, end)`` covering ``n`` frames: cores of ``chunk`` frames plus ``context`` each side.

    Unlike the original loop, the last frame is never dropped (pitfall 3).
    """
    out, o = [], 0
    while True:
        start, end = max(0, o - context), min(n, o + chunk + context)
        out.append((start, end))
        if end >= n:  # this window reaches the end: a following one would only repeat frames
            return out
        o += chunk


def crossfade_weights(start: int, end: int, n: int, context: int) -> np.ndarray:
    """Trapezoid weights of one window: linear ramps over the ``2 * context`` frames it shares with a neighbour.

    Neighbouring windows overlap by exactly ``2 * context`` frames and their ramps sum to 1 there.
    """
    w = np.ones(end - start, dtype=np.float32)
    ramp = 2 * context
    if ramp > 0 and start > 0:
        w[:ramp] = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
    if ramp > 0 and end < n:
        w[-ramp:] = np.minimum(w[-ramp:], (ramp - 0.5 - np.arange(ramp, dtype=np.float32)) / ramp)
    return w


def mix_speakers(paths: list[str], weights: list[float] | None, expected_backend: str | None) -> np.ndarray:
    """The weighted mean of one or more ``.spk.npy`` files ``[256]`` (weights are normalised to sum to 1)."""
    from speaker.backends import read_backend_tag, read_speaker_file

    if weights and len(weights) != len(paths):
        raise InferenceError(f"--spk_weights: {len(weights)} weights for {len(paths)} --spk files")
    weights = np.asarray(weights or [1.0] * len(paths), dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise InferenceError("--spk_weights: weights must be finite and >= 0 with a positive sum")
    vecs = []
    for p in paths:
        try:  # a bad file, or a malformed backend.json beside it
            v, tag = read_speaker_file(p), read_backend_tag(p)
        except ValueError as exc:
            raise InferenceError(str(exc).splitlines()[0]) from None
        if expected_backend and tag and tag != expected_backend:
            raise InferenceError(f"{p}: made by the '{tag}' speaker encoder, but the model was trained on "
                                 f"'{expected_backend}' embeddings")
        vecs.append(v.astype(np.float64))
    return (np.tensordot(weights / weights.sum(), np.stack(vecs), axes=1)).astype(np.float32)


def read_pitch_file(path: str) -> np.ndarray:
    """F0 per 10 ms from an (edited) CSV of pitch/inference.py or a ``.pit.npy``."""
    if not Path(path).is_file():
        raise InferenceError(f"{path}: pitch file not found")
    try:
        if path.endswith(".npy"):
            f0 = np.load(path, allow_pickle=False).astype(np.float64)
        else:
            from pitch.csv_io import load_csv_pitch

            f0 = load_csv_pitch(path)
    except (ValueError, OSError) as exc:  # PitchCsvError is a ValueError; numpy raises both kinds
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InferenceError(msg if msg.startswith(path) else f"{path}: not a pitch file ({msg})") from None
    if f0.ndim != 1 or not np.isfinite(f0).all() or (f0 < 0).any():
        raise InferenceError(f"{path}: F0 must be finite, >= 0 Hz, one value per frame")
    return f0


def companion_paths(out: Path) -> tuple[Path, Path]:
    """The F0 check wav and mel image beside ``out`` (``gvc_out.wav`` -> ``gvc_pitch.wav``, ``gvc_out.mel.png``)."""
    stem = out.stem
    pitch_stem = stem[: -len("_out")] + "_pitch" if stem.endswith("_out") else stem + "_pitch"
    return out.with_name(pitch_stem + ".wav"), out.with_name(stem + ".mel.png")


def save_mel_image(mel: torch.Tensor, path: Path) -> None:
    """The mel as a PNG image, written atomically (matplotlib's object API: no pyplot state kept per song)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from common.io import atomic_path

    fig = Figure(figsize=(12, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(mel.float().cpu().numpy(), aspect="auto", origin="lower", interpolation="none")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("frame (10 ms)")
    ax.set_ylabel("mel band")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# ----------------------------------------------------------------------------------------------------------------
# the converter: models loaded once


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
        from bigvgan.chunks import group_equal

        wins = windows(n, icfg.out_chunk, icfg.hop_frame)
        n_steps = self.model.default_steps if steps is None else int(steps)
        bar = progress_bar(len(wins) * n_steps, "acoustic model", "step")  # windows x decoder steps
        for group in group_equal(wins, self.batch, length=lambda w: w[1] - w[0]):
            v = torch.from_numpy(np.stack([vec[s:e] for s, e in group])).float().to(self.device)
            p = torch.from_numpy(np.stack([f0[s:e] for s, e in group])).float().to(self.device)
            with autocast:
                out = self.model.synthesise(v, p, spk_t.expand(len(group), -1), n_timesteps=steps,
                                            temperature=temperature, sampler=sampler,
                                            noise=_BatchNoise([noise.at(s) for s, _ in group]))
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
        from bigvgan.chunks import plan_windows
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
                shift: float = 0.0, steps: int | None = None, temperature: float | None = None,
                sampler: str | None = None, seed: int | None = None) -> Conversion:
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
        f0 = shift_f0(f0, shift(f0, wave) if callable(shift) else shift)  # callable: --shift auto (pitch.key)
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

    def at(self, start: int) -> _WindowNoise:
        return _WindowNoise(self, start)


class _WindowNoise(NoiseSource):
    """A ``grad.samplers.NoiseSource`` drawing one window's share of ``PositionalNoise``."""

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


class _BatchNoise(NoiseSource):
    """The noise of a batch of windows: item i draws what window i draws alone (``PositionalNoise.at``)."""

    def __init__(self, items: list[_WindowNoise]):
        super().__init__()
        self.items = items

    def randn(self, shape, like: torch.Tensor) -> torch.Tensor:
        batch, *rest = shape
        if batch != len(self.items):
            raise ValueError(f"noise for a batch of {batch} requested from {len(self.items)} windows")
        return torch.cat([item.randn((1, *rest), like) for item in self.items])


# ----------------------------------------------------------------------------------------------------------------
# command line


def shift_arg(text: str) -> float | str:
    """``--shift``: semitones, or ``auto`` (pitch/key.py)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: semitones (a number) or 'auto'") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Grad-SVC conversion")
    ap.add_argument("-c", "--config", default=None, help="config overlay; our checkpoints carry their own config")
    ap.add_argument("--model", required=True, help="gvc.pth, the official gvc.pretrain.pth or a training checkpoint")
    ap.add_argument("--spk", required=True, nargs="+", help="target singer .spk.npy (several: a mix)")
    ap.add_argument("--spk_weights", type=float, nargs="+", default=None, help="mixing weights of --spk files")
    ap.add_argument("--wave", required=True, help="input song, or a folder of songs (converted recursively)")
    ap.add_argument("--vec", default=None, help="HuBERT units from hubert/inference.py (else computed)")
    ap.add_argument("--pit", default=None, help="F0 CSV from pitch/inference.py, may be edited (else computed)")
    ap.add_argument("--shift", type=shift_arg, default=0,
                    help="pitch shift in semitones, or 'auto': per song, the whole shift that puts its F0 into the "
                         "--spk singer's range (from <singer>.f0.json beside the .spk.npy, written by step 6)")
    ap.add_argument("--temperature", "--rature", dest="temperature", type=float, default=None,
                    help="sampling temperature (V2 divides the noise by it, V3 multiplies; default 1.015)")
    ap.add_argument("--steps", type=int, default=None,
                    help="decoder steps (default: V3 10, V2 20); 0 vocodes the encoder's prior mel mu without the "
                         "decoder (for a model trained for minutes)")
    ap.add_argument("--solver", "--sampler", dest="sampler", default=None,
                    help="V3/rectified: euler, heun; V2: ml, euler_sde, euler_ode, dpm1, dpm2, dpm3")
    ap.add_argument("--seed", type=int, default=None, help="makes the output reproducible bit for bit")
    ap.add_argument("--out", default=None, help=f"output wav (default {DEFAULT_OUT}; a folder in folder mode)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--half", action="store_true", help="float16 autocast for the acoustic model (CUDA only)")
    ap.add_argument("--batch", type=int, default=None,
                    help="acoustic-model and vocoder windows (24 s each) run this many at a time: faster on a "
                         "GPU for long songs, more memory; the same output (default: infer.batch_windows, 1)")
    ap.add_argument("--vocoder", choices=["bigvgan", "griffinlim", "world"], default="bigvgan",
                    help="without the NSF-BigVGAN checkpoint: world (WORLD from the mel's envelope, the F0 exact) "
                         "or griffinlim (a phasey preview)")
    ap.add_argument("--vocoder_model", default=None, help="default bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth")
    ap.add_argument("--hubert_model", default=None, help="default hubert_pretrain/hubert-soft-0d54a1f4.pt")
    ap.add_argument("--f0", "--method", dest="f0_method", default=None,
                    help="F0 method: praat (default), crepe, crepe-tiny, harvest, fcpe")
    ap.add_argument("--f0_fix", choices=["none", "octave"], default="none",
                    help="octave: fold back isolated octave jumps shorter than 150 ms (default none, as the original)")
    ap.add_argument("--no_png", action="store_true", help="do not render the mel image")
    ap.add_argument("--workers", type=int, default=1,
                    help="folder mode: processes, each with its own models (default 1)")
    ap.add_argument("--overwrite", action="store_true",
                    help="folder mode: convert songs whose output already exists again (default: skip them)")
    return ap


def write_outputs(conv: Conversion, out: Path, sr: int, pitch_wav: np.ndarray | None, png: bool) -> None:
    from bigvgan.model import to_int16

    pcm = np.empty(len(conv.wav), dtype=np.int16)  # the vocoder's x 32768 (the original's), a piece at a time:
    for a in range(0, len(pcm), 1 << 20):  # the whole song's float temporaries were 5x its int16 size
        pcm[a: a + (1 << 20)] = to_int16(torch.from_numpy(conv.wav[a: a + (1 << 20)])).numpy()
    write_wav(out, pcm, sr)
    del pcm
    log_rss("write")
    pitch_path, png_path = companion_paths(out)
    if pitch_wav is not None:
        write_wav(pitch_path, pitch_wav, sr)
    if png:
        save_mel_image(conv.mel, png_path)
        log_rss("png")


def check_options(args, cfg) -> None:
    """Refuse bad settings before any work (a sampler of the other decoder, zero steps, an unknown F0 method, ...)."""
    from grad.samplers import get_sampler
    from pitch.f0 import METHODS

    kind = "score" if cfg.grad.decoder == "score" else "flow"
    try:
        get_sampler(args.sampler or str(cfg.grad.sampler), kind)
    except ValueError as exc:
        raise InferenceError(f"--sampler: {exc}") from None
    if args.steps is not None and args.steps < 0:
        raise InferenceError(f"--steps {args.steps}: at least 1 (or 0: the encoder's prior mel)")
    if args.temperature is not None and not (np.isfinite(args.temperature) and args.temperature >= 0):
        raise InferenceError(f"--temperature {args.temperature}: must be finite and >= 0")
    if args.temperature == 0 and kind == "score":
        raise InferenceError("--temperature 0: V2 divides the noise by the temperature; use a value > 0")
    method = args.f0_method or cfg.data.f0_method
    if method not in METHODS:
        raise InferenceError(f"--f0 {method}: unknown F0 method; choose one of {', '.join(METHODS)}")
    if args.batch is not None and args.batch < 1:
        raise InferenceError(f"--batch {args.batch}: at least 1")
    if args.shift != "auto":
        shift_f0(np.zeros(1), args.shift)  # an absurd shift


def folder_jobs(wave: Path, out_root: Path, png: bool, extra: dict) -> list:
    """One job per song under ``wave``: the output mirrors its relative path as ``.wav``; songs that would share an
    output (``a.wav`` and ``a.flac``) keep their format in the name (``a_wav.wav``, ``a_flac.wav``)."""
    from common.filewalk import Job, mirror_path

    files = list_audio(wave)
    outs = [mirror_path(f, wave, out_root, ".wav") for f in files]
    shared = {o for o in outs if outs.count(o) > 1}
    jobs = []
    for src, out in zip(files, outs):
        if out in shared:
            out = out.with_name(f"{src.stem}_{src.suffix.lstrip('.').lower()}.wav")
        jobs.append(Job(src, [out] + ([companion_paths(out)[1]] if png else []), extra))
    return jobs


def check_pretrained(args) -> None:
    """Every pretrained file this run needs, before any is loaded: all the missing ones in one error, each with the
    flag that gives its path and the offline alternative."""
    from bigvgan.model import DEFAULT_CHECKPOINT as BIGVGAN_FILE
    from common.checkpoint import Pretrained, require_pretrained
    from hubert.model import DEFAULT_CHECKPOINT as HUBERT_FILE

    files = [Pretrained(args.model, "gvc", "--model")]
    if args.vec is None or Path(args.wave).is_dir():
        files.append(Pretrained(args.hubert_model or HUBERT_FILE, "hubert", "--hubert_model"))
    if args.vocoder == "bigvgan":
        files.append(Pretrained(args.vocoder_model or BIGVGAN_FILE, "bigvgan", "--vocoder_model",
                                "--vocoder world or --vocoder griffinlim (no download)"))
    require_pretrained(files)


def make_converter(args) -> Converter:
    return Converter(args.model, args.config, args.device, args.vocoder, args.vocoder_model, args.hubert_model,
                     args.f0_method, args.half, args.batch, f0_fix=getattr(args, "f0_fix", None))


def _folder_converter(args, spk: np.ndarray):
    """Worker state of folder mode: its own converter (models loaded once per process) and the speaker."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")  # a spawned worker's lines too
    return make_converter(args), spk


def _convert_job(job, state) -> None:
    converter, spk = state
    opts = job.extra
    conv = converter.convert(str(job.src), spk, **opts["convert"])
    write_outputs(conv, job.outputs[0], converter.cfg.data.sampling_rate, None, opts["png"])


def run(args) -> int:
    check_pretrained(args)
    key = None  # --shift auto: pitch.key.AutoShift, chosen per song from its F0 and the singer's F0 statistics
    if args.shift == "auto":  # read before any model is loaded
        from pitch.key import KeyStatsError, auto_shift

        try:
            key = auto_shift(args.spk, args.spk_weights)
        except KeyStatsError as exc:
            raise InferenceError(str(exc)) from None
    converter = make_converter(args)
    log_rss("load")
    cfg = converter.cfg
    check_options(args, cfg)
    spk = mix_speakers(args.spk, args.spk_weights, cfg.data.speaker_backend)
    if args.vocoder == "griffinlim":
        log.warning("vocoder: Griffin-Lim PREVIEW (no NSF-BigVGAN); expect phasey, metallic audio")
    opts = dict(shift=args.shift if key is None else key, steps=args.steps, temperature=args.temperature,
                sampler=args.sampler, seed=args.seed)
    wave = Path(args.wave)
    sr = cfg.data.sampling_rate
    if wave.is_dir():
        from common.filewalk import finish, run_jobs

        if args.vec or args.pit:
            raise InferenceError("--vec/--pit name one file's features; not usable with a folder --wave")
        out_root = Path(args.out or "gvc_out")
        if out_root.exists() and not out_root.is_dir():
            raise InferenceError(f"{out_root}: --out must be a folder in folder mode")
        jobs = folder_jobs(wave, out_root, not args.no_png, {"convert": opts, "png": not args.no_png})
        if not jobs:
            raise InferenceError(f"{wave}: no audio files in this folder")
        # worker processes load their own models; in this process the converter above is used
        summary = run_jobs(jobs, _convert_job, args.workers, "convert", _folder_converter, (args, spk),
                           skip_done=not args.overwrite, ready=(converter, spk))
        print(f"converted {summary.processed} of {len(jobs)} songs into {out_root}"
              + (f" ({summary.skipped} already there; --overwrite converts them again)" if summary.skipped else ""))
        return finish(summary, "convert")
    out = Path(args.out or DEFAULT_OUT)
    if out.is_dir():
        raise InferenceError(f"{out}: --out names a folder; give the output wav's path")
    conv = converter.convert(str(wave), spk, args.vec, args.pit, **opts)
    pitch_wav = converter.pitch_wav(conv.f0, args.seed)
    log_rss("pitch_wav")
    write_outputs(conv, out, sr, pitch_wav, not args.no_png)
    label = "Griffin-Lim PREVIEW" if conv.vocoder == "griffinlim" else conv.vocoder
    print(f"{out}: {len(conv.wav) / sr:.2f} s at {sr} Hz ({label})")
    return 0


def main(argv=None) -> int:
    tune_allocator()
    drop_primitive_cache()  # bounded memory for long songs (issue 12)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (AudioError, InferenceError, FeatureError, CheckpointError, ConfigError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
