"""Speaker embeddings (256-d, one per utterance, from 16 kHz audio).

``speaker.lstm``: the original's LSTM encoder and official-checkpoint loader; ``speaker.frontend``: its audio front
end; ``speaker.backends``: ``load_speaker_backend("lstm" | "resemblyzer")`` and the ``backend.json`` tags;
``speaker/inference.py``: one file -> ``.spk.npy``.
"""

from speaker.backends import (
    BACKENDS,
    SilentAudioError,
    SpeakerBackend,
    check_backend,
    load_speaker_backend,
    read_backend_tag,
    write_backend_tag,
)

_LAZY = {"wav_to_spk_mel": "speaker.frontend", "LSTMSpeakerEncoder": "speaker.lstm",
         "load_lstm_encoder": "speaker.lstm"}


def __getattr__(name: str):
    # the model modules import torch (seconds); tag helpers and the averaging step do not need them
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BACKENDS",
    "LSTMSpeakerEncoder",
    "SilentAudioError",
    "SpeakerBackend",
    "check_backend",
    "load_lstm_encoder",
    "load_speaker_backend",
    "read_backend_tag",
    "wav_to_spk_mel",
    "write_backend_tag",
]
