"""The original's LSTM speaker encoder (Coqui / mozilla TTS "LSTMSpeakerEncoder", as in Grad-SVC ``speaker/``).

Three stacked ``LSTM(768)`` layers, each followed by a bias-free ``Linear(768 -> 256)`` projection; the utterance
embedding is the L2-normalised projection of the last frame. Input: the speaker front end's normalised log-mel
(``speaker.frontend``), 80 bands, 16 kHz, hop 256 (62.5 frames/s). Official weights:
``speaker_pretrain/best_model.pth.tar`` (``{'model': state_dict, ...}``, 15 keys, 9,504,768 parameters).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.checkpoint import CheckpointError, load_checkpoint, load_state_report

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "speaker_pretrain/best_model.pth.tar"
EMBED_DIM = 256
N_MELS = 80
WINDOW_FRAMES = 250  # compute_embedding: frames per window (4 s at 62.5 frames/s)
N_WINDOWS = 10


class LSTMProjection(nn.Module):
    """One layer: ``LSTM(input -> hidden)`` then ``Linear(hidden -> proj, bias=False)`` on every frame."""

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, batch_first=True)
        self.linear = nn.Linear(hidden_dim, proj_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, T, input_dim)`` -> ``(B, T, proj_dim)``."""
        out, _ = self.lstm(x)
        return self.linear(out)


class LSTMSpeakerEncoder(nn.Module):
    """Speaker encoder with the official key layout ``layers.{0,1,2}.{lstm,linear}.*``."""

    def __init__(self, input_dim: int = N_MELS, proj_dim: int = EMBED_DIM, lstm_dim: int = 768, num_layers: int = 3):
        super().__init__()
        dims = [input_dim] + [proj_dim] * (num_layers - 1)
        self.layers = nn.Sequential(*(LSTMProjection(d, lstm_dim, proj_dim) for d in dims))
        self.dim = proj_dim

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel (B, T, 80)`` -> L2-normalised embedding of the last frame ``(B, 256)`` (differentiable)."""
        d = self.layers(mel)
        return nn.functional.normalize(d[:, -1], p=2, dim=1)

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel (B, T, 80)`` -> ``(B, 256)``, unit L2 norm per row (no gradient)."""
        return self.forward(mel)

    @torch.inference_mode()
    def compute_embedding(
        self, mel: torch.Tensor, num_frames: int = WINDOW_FRAMES, num_windows: int = N_WINDOWS
    ) -> torch.Tensor:
        """Utterance embedding ``(256,)`` from ``mel (1, T, 80)`` or ``(T, 80)``.

        Like the original: ``num_windows`` windows of ``num_frames`` frames at offsets
        ``int(linspace(0, T - num_frames, num_windows))`` (every window is the whole input when
        ``T < num_frames``), each embedded by ``inference``; the result is their MEAN, not re-normalised
        (its norm is below 1). Repeated offsets are embedded once and weighted by their count (same result up to
        float rounding, up to 10x faster for inputs of about 4 s or less).
        """
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.shape[0] != 1 or mel.shape[-1] != self.layers[0].lstm.input_size:
            raise ValueError(f"compute_embedding expects mel (1, T, {self.layers[0].lstm.input_size}), "
                             f"got {tuple(mel.shape)}")
        total = mel.shape[1]
        if total == 0:
            raise ValueError("compute_embedding: empty mel (0 frames)")
        num_frames = min(num_frames, total)
        offsets = [int(o) for o in np.linspace(0, total - num_frames, num=num_windows)]
        # identical windows (all of them when T <= num_frames) are embedded once and counted, not recomputed
        unique, counts = np.unique(offsets, return_counts=True)
        windows = torch.cat([mel[:, o:o + num_frames] for o in unique], dim=0)
        emb = self.inference(windows)
        if len(unique) == num_windows:
            return emb.mean(dim=0)
        weights = torch.as_tensor(counts, dtype=emb.dtype, device=emb.device)[:, None]
        return (emb * weights).sum(dim=0) / num_windows


def _state_dict_of(obj: object, source: str) -> Mapping[str, torch.Tensor]:
    """The state dict inside a speaker checkpoint: ``'model'`` (official), ``'model_state'`` or a flat dict.

    The original loader accepts the same three layouts (``speaker/models/lstm.py`` ``load_checkpoint``).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: not a speaker-encoder checkpoint (a {type(obj).__name__}, expected a dict)")
    for key in ("model", "model_state"):
        if key in obj:
            state = obj[key]
            break
    else:
        state = obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: no state dict of tensors under 'model' (keys: {', '.join(map(str, obj))})")
    return state


def load_lstm_encoder(path: str | Path = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu") -> LSTMSpeakerEncoder:
    """Load the official ``best_model.pth.tar`` (``{'model': sd, ...}``) into an eval-mode encoder on ``device``.

    ``torch.load(weights_only=True)``; a missing file, a file that pickles other objects, missing keys or a shape
    mismatch raise ``common.checkpoint.CheckpointError`` (one line naming the file). Keys not used by the model
    are logged.
    """
    obj = load_checkpoint(path, kind="speaker")
    model = LSTMSpeakerEncoder()
    load_state_report(model, _state_dict_of(obj, str(path)), str(path))
    return model.to(device).eval()
