"""Audio front end of the LSTM speaker encoder (the original's speaker ``AudioProcessor`` with
``do_trim_silence`` and ``do_sound_norm`` forced on, as ``prepare/preprocess_speaker.py`` sets them).

16 kHz mono float audio -> cut 160 samples (10 ms) at each end -> ``librosa.effects.trim(top_db=60,
frame_length=1024, hop_length=256)`` -> peak 0.95 -> pre-emphasis 0.98 -> librosa STFT (n_fft 1024, hop 256,
Hann 1024, centred, reflect) -> magnitude -> mel (80 bands, 0-8000 Hz, slaney) -> ``20 log10(max(1e-5, m)) - 20``
-> ``((S + 100) / 100) * 8 - 4`` clipped to [-4, 4]. Output float32 ``(80, T)``, ``T = 1 + N // 256`` for the
trimmed length ``N`` (62.5 frames/s). Computed in float64 like the original (numpy), cast at the end.
"""

from __future__ import annotations

import logging

import numpy as np

from common.audio import AudioError
from common.mel import mel_basis

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256
WIN = 1024
N_MELS = 80
FMIN = 0.0
FMAX = 8000.0
PREEMPHASIS = 0.98
TRIM_MARGIN = 160  # int(0.01 s * 16000): the original cuts this much from both ends before trimming
TRIM_DB = 60
PEAK = 0.95
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_NORM = 4.0


def trim_silence(wav: np.ndarray) -> np.ndarray:
    """Cut 10 ms at each end, then strip leading/trailing audio quieter than 60 dB below the peak.

    ``wav (N,)`` at 16 kHz -> ``(N',)``, same dtype. As in the original ``load_wav``: if librosa cannot trim
    (too short), the input is returned unchanged.
    """
    import librosa

    try:
        cut = wav[TRIM_MARGIN:-TRIM_MARGIN]
        return librosa.effects.trim(cut, top_db=TRIM_DB, frame_length=WIN, hop_length=HOP)[0]
    except (ValueError, librosa.util.exceptions.ParameterError):  # the original catches ValueError
        log.debug("cannot trim %d samples for silence; kept as is", wav.shape[0])
        return wav


def sound_norm(wav: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale ``wav`` so its absolute peak is ``peak`` (0.95). Silence stays silence instead of becoming NaN."""
    m = float(np.abs(wav).max()) if wav.size else 0.0
    if m == 0.0:  # the original divides by zero here
        return wav.copy()
    return wav / m * peak


def prepare_wav(wav16: np.ndarray) -> np.ndarray:
    """``trim_silence`` then ``sound_norm``: the waveform the speaker mel is computed from (16 kHz, float32)."""
    wav16 = np.asarray(wav16, dtype=np.float32)
    if wav16.ndim != 1:
        raise AudioError(f"speaker front end expects mono audio (N,), got shape {wav16.shape}")
    return sound_norm(trim_silence(wav16)).astype(np.float32)


def spk_melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Normalised log-mel of an already trimmed and normalised 16 kHz ``wav (N,)`` -> float32 ``(80, 1 + N // 256)``."""
    import librosa
    import scipy.signal

    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1 or wav.shape[0] == 0:
        raise AudioError(f"speaker mel needs a non-empty mono waveform, got shape {wav.shape}")
    x = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], wav)
    spec = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window="hann", center=True,
                               pad_mode="reflect"))
    # librosa's float32 filterbank applied to the float64 magnitude, as the original's np.dot does
    basis = mel_basis(SAMPLE_RATE, N_FFT, N_MELS, FMIN, FMAX).numpy().astype(np.float64)
    db = 20.0 * np.log10(np.maximum(1e-5, basis @ spec)) - REF_LEVEL_DB
    norm = (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB * (2.0 * MAX_NORM) - MAX_NORM
    return np.clip(norm, -MAX_NORM, MAX_NORM).astype(np.float32)


def wav_to_spk_mel(wav16: np.ndarray) -> np.ndarray:
    """The full front end: 16 kHz mono ``wav16 (N,)`` -> float32 ``(80, T)`` at 62.5 frames/s."""
    return spk_melspectrogram(prepare_wav(wav16))
