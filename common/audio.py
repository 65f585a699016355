"""Audio I/O: read anything soundfile reads, at any rate and channel count, as mono float32; write atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from common.io import atomic_path

log = logging.getLogger(__name__)

# the containers soundfile (libsndfile) reads, by their usual extensions
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au",
                    ".snd", ".caf", ".w64", ".rf64", ".voc")
# shortest input a feature extractor accepts (preprocess_a already skips clips under 0.3 s)
MIN_FEATURE_SECONDS = 0.1


class AudioError(ValueError):
    """An input file that cannot be used; the message is one line naming the file and the problem."""


def load_audio(path: str | Path, sr: int | None = None, min_seconds: float = 0.0) -> np.ndarray:
    """Read ``path`` as mono float32 in [-1, 1] at ``sr`` Hz (``None`` keeps the file's rate).

    Channels are averaged; resampling is soxr 'high quality', which is what ``librosa.load`` (the original) does.
    Raises ``AudioError`` for unreadable, empty, non-finite or too-short audio.
    """
    wav, file_sr = read_audio(path)
    if sr is not None and file_sr != sr:
        import soxr

        # soxr "HQ" is what librosa.load / librosa.resample use by default (identical samples), without importing
        # librosa's scipy.signal and numba (~1.7 s per process)
        n_out = int(np.ceil(wav.shape[0] * (float(sr) / file_sr)))
        wav = soxr.resample(wav, file_sr, sr, quality="HQ").astype(np.float32)
        # librosa.load's length: ceil(N x ratio), zero-padded (soxr alone rounds; the samples are identical)
        wav = np.pad(wav, (0, max(0, n_out - wav.shape[0])))[:n_out]
        file_sr = sr
    if wav.shape[0] < min_seconds * file_sr:
        raise AudioError(f"{path}: too short ({wav.shape[0] / file_sr:.3f} s < {min_seconds} s)")
    return wav


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read ``path`` without resampling: (mono float32 samples, sample rate)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad files
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise AudioError(f"{path}: not readable as audio ({reason})") from None
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(wav, dtype=np.float32), int(file_sr)


def normalize_peak(wav: np.ndarray, peak: float = 0.6) -> np.ndarray:
    """Scale so the absolute peak is ``peak``, as the original's ``wav / |wav|.max() * 0.6`` (no floor: every
    non-silent file reaches ``peak``); an all-zero input is returned as zeros instead of NaN (callers that need
    audio refuse silent files first)."""
    m = float(np.abs(wav).max()) if wav.size else 0.0
    if m == 0.0:
        return np.zeros_like(wav, dtype=np.float32)
    return (wav / m * peak).astype(np.float32)


def to_int16(wav: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 by ``x * 32767`` truncated toward zero (the original's ``astype(int16)``)."""
    return np.clip(wav * 32767.0, -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, wav: np.ndarray, sr: int) -> None:
    """Write a WAV atomically: int16 arrays as PCM_16, float arrays as PCM_16 after clipping."""
    wav = np.asarray(wav)
    if wav.dtype != np.int16:
        wav = np.clip(wav, -1.0, 1.0).astype(np.float32)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav, sr, subtype="PCM_16", format="WAV")


def list_audio(folder: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Every audio file under ``folder`` (recursive), sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
