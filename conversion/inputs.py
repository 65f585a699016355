"""A conversion's inputs checked and aligned: units and F0 to one 100 Hz frame grid, the pitch shift, a user's
(edited) F0 file, and the target speaker (one ``.spk.npy`` or a weighted mix). Every refusal is an
``InferenceError`` whose one line names the file or flag."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_SHIFT = 24  # semitones; beyond two octaves the F0 leaves the model's 50-1100 Hz pitch range
PITCH_SLACK = 6  # our F0 track is ~3 frames longer than 2 x units; more than this means a file of another audio


class InferenceError(ValueError):
    """A bad input of the conversion (one line, names the file)."""


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


def pretrained_files(model: str, hubert_model: str | None = None, vocoder: str = "bigvgan",
                     vocoder_model: str | None = None, units_given: bool = False) -> list:
    """The pretrained files a conversion needs (``common.checkpoint.Pretrained``: path, where to get it, the
    ``gvc_inference.py`` flag that overrides it, the offline alternative): the model, HuBERT unless the units are
    given, NSF-BigVGAN for ``vocoder="bigvgan"``."""
    from bigvgan.model import DEFAULT_CHECKPOINT as BIGVGAN_FILE
    from common.checkpoint import Pretrained
    from hubert.model import DEFAULT_CHECKPOINT as HUBERT_FILE

    files = [Pretrained(model, "gvc", "--model")]
    if not units_given:
        files.append(Pretrained(hubert_model or HUBERT_FILE, "hubert", "--hubert_model"))
    if vocoder == "bigvgan":
        files.append(Pretrained(vocoder_model or BIGVGAN_FILE, "bigvgan", "--vocoder_model",
                                "--vocoder world or --vocoder griffinlim (no download)"))
    return files
