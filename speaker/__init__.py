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
from speaker.frontend import wav_to_spk_mel
from speaker.lstm import LSTMSpeakerEncoder, load_lstm_encoder

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
