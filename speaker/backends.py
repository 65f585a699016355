"""Speaker-embedding backends behind one interface, and the ``backend.json`` tags that keep them apart.

* ``lstm``: the original's encoder (``speaker.lstm``) with its front end (``speaker.frontend``); needs the official
  ``speaker_pretrain/best_model.pth.tar``. Embedding = mean of 10 unit vectors (norm below 1), as the original.
* ``resemblyzer``: resemblyzer's GE2E ``VoiceEncoder`` (weights ship in the wheel, so it works offline) with its own
  preprocessing (volume normalisation, VAD silence trimming, 40-band mel); unit-norm embedding.

Both give float32 ``(256,)`` from 16 kHz mono audio, but the two spaces are unrelated: a model trained on one
cannot use the other. Every folder of embeddings therefore holds ``backend.json`` (``{"backend": name, "dim": 256}``)
and the commands refuse to mix backends.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.audio import AudioError
from common.io import write_text

if TYPE_CHECKING:  # torch is imported when a model is built, not by the tag helpers
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("lstm", "resemblyzer")
EMBED_DIM = 256
SAMPLE_RATE = 16000
TAG_FILE = "backend.json"
# a file whose absolute peak is below -80 dBFS (about 3 LSB of 16-bit audio) holds no voice to embed
SILENCE_PEAK = 1e-4


class SilentAudioError(AudioError):
    """Audio without anything to embed (digital silence, or nothing left after voice detection)."""


def check_voice(wav16: np.ndarray) -> np.ndarray:
    """Return ``wav16`` as a float32 mono array; raise ``SilentAudioError`` if it is silent or empty."""
    wav16 = np.asarray(wav16, dtype=np.float32)
    if wav16.ndim != 1:
        raise AudioError(f"speaker embedding expects mono 16 kHz audio (N,), got shape {wav16.shape}")
    if wav16.size == 0 or float(np.abs(wav16).max()) < SILENCE_PEAK:
        raise SilentAudioError("silent: no voice to embed")
    if not np.isfinite(wav16).all():
        raise AudioError("audio contains NaN or infinite samples")
    return wav16


class SpeakerBackend(ABC):
    """A speaker encoder: ``embed(wav16 (N,) float at 16 kHz) -> float32 (256,)``."""

    name: str = ""
    dim: int = EMBED_DIM

    def embed(self, wav16: np.ndarray) -> np.ndarray:
        wav16 = check_voice(wav16)
        emb = np.asarray(self._embed(wav16), dtype=np.float32).reshape(-1)
        if emb.shape != (self.dim,) or not np.isfinite(emb).all():
            raise RuntimeError(f"{self.name} speaker encoder gave a bad embedding (shape {emb.shape}, "
                               f"finite={bool(np.isfinite(emb).all())})")
        return emb

    @abstractmethod
    def _embed(self, wav16: np.ndarray) -> np.ndarray:
        """Embedding of checked, non-silent 16 kHz audio (any float array of 256 values)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class LSTMBackend(SpeakerBackend):
    """The original's pipeline: ``wav_to_spk_mel`` then ``LSTMSpeakerEncoder.compute_embedding``."""

    name = "lstm"

    def __init__(self, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"):
        from speaker.lstm import DEFAULT_CHECKPOINT, load_lstm_encoder

        self.checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
        import torch  # imported when a model is built: tag helpers and the averaging step do not need it

        self.device = torch.device(device)
        self.model = load_lstm_encoder(self.checkpoint, self.device)

    def _embed(self, wav16: np.ndarray) -> np.ndarray:
        import torch

        from speaker.frontend import wav_to_spk_mel

        mel = torch.from_numpy(wav_to_spk_mel(wav16).T.copy()).to(self.device)  # (T, 80)
        return self.model.compute_embedding(mel).cpu().numpy()


class ResemblyzerBackend(SpeakerBackend):
    """resemblyzer's ``VoiceEncoder`` with its bundled weights and its own ``preprocess_wav``."""

    name = "resemblyzer"

    def __init__(self, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"):
        import warnings

        with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder

        if checkpoint is not None:
            from common.checkpoint import require_file

            require_file(checkpoint)
        import torch  # imported when a model is built: tag helpers and the averaging step do not need it

        self.device = torch.device(device)
        try:
            self.model = VoiceEncoder(device=self.device, verbose=False, weights_fpath=checkpoint)
        except Exception as exc:  # noqa: BLE001 - torch.load / load_state_dict failures all mean a bad file
            from common.checkpoint import CheckpointError

            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(f"{checkpoint}: not a resemblyzer VoiceEncoder checkpoint "
                                  f"({exc.__class__.__name__}{': ' + msg if msg else ''})") from None
        self.model.eval()

    def _embed(self, wav16: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import audio_norm_target_dBFS, normalize_volume

        wav = preprocess_wav(wav16)  # already 16 kHz: no resampling; volume normalisation + VAD trimming
        if wav.size == 0:
            # webrtcvad's smoothed decision can drop a whole short clip of loud singing: embed it untrimmed then
            if float(np.sqrt(np.mean(np.square(wav16, dtype=np.float64)))) < 10 ** (-50 / 20):
                raise SilentAudioError("silent: no voice to embed (voice detection kept nothing)")
            wav = normalize_volume(np.asarray(wav16, dtype=np.float32), audio_norm_target_dBFS, increase_only=True)
        return self.model.embed_utterance(wav.astype(np.float32))


def add_encoder_args(ap) -> None:
    """The encoder options every speaker command shares: --backend, --checkpoint, --device, -c/--config."""
    ap.add_argument("--backend", choices=BACKENDS, default=None,
                    help="speaker encoder (default: data.speaker_backend of the config)")
    ap.add_argument("--checkpoint", default=None,
                    help="LSTM: best_model.pth.tar (default speaker_pretrain/best_model.pth.tar); "
                         "resemblyzer: a custom .pt (default: the weights in the wheel)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    ap.add_argument("-c", "--config", default=None, help="config overlay (for data.speaker_backend)")


def load_speaker_backend(
    name: str = "lstm", checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> SpeakerBackend:
    """The backend ``name`` ("lstm" | "resemblyzer"), loaded once on ``device``.

    ``checkpoint``: the LSTM's ``best_model.pth.tar`` (default ``speaker_pretrain/best_model.pth.tar``) or a
    custom resemblyzer ``.pt`` (default: the weights in the wheel).
    """
    if name == "lstm":
        return LSTMBackend(checkpoint, device)
    if name == "resemblyzer":
        return ResemblyzerBackend(checkpoint, device)
    raise ValueError(f"unknown speaker backend {name!r}; choose one of {', '.join(BACKENDS)}")


def read_speaker_file(path: str | Path) -> np.ndarray:
    """A ``.spk.npy`` as float32 ``[256]``; a one-line ``ValueError`` naming the file when it is missing, not a
    .npy array, of another shape or not finite."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: speaker file not found")
    try:
        v = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any numpy load failure means a bad file
        raise ValueError(f"{path}: not a .npy speaker embedding ({exc.__class__.__name__})") from None
    if v.shape != (EMBED_DIM,):
        raise ValueError(f"{path}: a speaker embedding has shape ({EMBED_DIM},), this file has {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{path}: speaker embedding contains NaN or infinite values")
    return v.astype(np.float32)


def write_backend_tag(folder: str | Path, name: str) -> Path:
    """Write ``folder/backend.json`` = ``{"backend": name, "dim": 256}`` (atomically); returns its path."""
    if name not in BACKENDS:
        raise ValueError(f"unknown speaker backend {name!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(folder) / TAG_FILE
    write_text(path, json.dumps({"backend": name, "dim": EMBED_DIM}) + "\n")
    return path


def find_backend_tag(path: str | Path) -> Path | None:
    """The ``backend.json`` that governs ``path``: in the folder itself (or the file's folder), else in the folder
    above it (``data_gvc/speaker/backend.json`` covers ``data_gvc/speaker/<singer>/*.spk.npy``); ``None`` otherwise.
    No further up: a tag left in a working folder must not govern every dataset below it."""
    p = Path(path).absolute()
    folder = p if p.is_dir() else p.parent
    for candidate in (folder, folder.parent):
        tag = candidate / TAG_FILE
        if tag.is_file():
            return tag
    return None


def read_backend_tag(path: str | Path) -> str | None:
    """Backend name recorded for ``path`` (a folder of embeddings or a file in one), or ``None`` if untagged."""
    tag = find_backend_tag(path)
    if tag is None:
        return None
    try:
        data = json.loads(tag.read_text(encoding="utf-8"))
        name = data["backend"]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{tag}: not a valid speaker backend tag ({exc.__class__.__name__}: {exc})") from None
    if name not in BACKENDS:
        raise ValueError(f"{tag}: unknown speaker backend {name!r}")
    return name


def check_backend(path: str | Path, expected: str, what: str = "speaker embeddings") -> str | None:
    """Raise a one-line ``ValueError`` when ``path``'s tag names another backend than ``expected``.

    Untagged paths (e.g. files made by the original code) pass; returns the tag found (or ``None``).
    """
    found = read_backend_tag(path)
    if found is not None and found != expected:
        raise ValueError(f"{path}: {what} were made with speaker backend '{found}', but '{expected}' is in use; "
                         f"the two embedding spaces cannot be mixed")
    return found
