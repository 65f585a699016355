"""The conversion library: a song sung by another singer, every stage in one process, imported by the scripts
(``gvc_inference.py``, ``gvc_sampler_study.py``, ``gvc_demo.py``, ``bench/``) and by applications.

Modules: ``converter`` (``Converter``: models loaded once, ``convert`` one song -> ``Conversion``), ``inputs``
(units/F0 alignment, pitch shift, F0 files, speaker mixes, ``InferenceError``), ``crossfade`` (the acoustic model's
windows and their crossfade weights), ``outputs`` (the song, F0 check wav and mel image beside it), ``progress``
(per-stage progress bars, memory lines for the bench).

    from conversion import Converter
    conv = Converter("gvc.pth", vocoder="world")
    result = conv.convert("song.wav", spk, shift=2, seed=1)  # result.wav: float32 at 32 kHz

Dependencies point one way: ``common`` <- ``grad``/``bigvgan``/``hubert``/``pitch``/``speaker`` <- ``conversion``
<- scripts. Nothing here imports a script or the trainer.
"""

from conversion.converter import Conversion, Converter
from conversion.crossfade import crossfade_weights, windows
from conversion.inputs import (
    MAX_SHIFT,
    PITCH_SLACK,
    InferenceError,
    align,
    mix_speakers,
    pretrained_files,
    read_pitch_file,
    shift_f0,
)
from conversion.outputs import companion_paths, save_mel_image, write_outputs, write_song
from conversion.progress import log_rss, progress_bar

__all__ = [
    "MAX_SHIFT", "PITCH_SLACK", "Conversion", "Converter", "InferenceError", "align", "companion_paths",
    "crossfade_weights", "log_rss", "mix_speakers", "pretrained_files", "progress_bar", "read_pitch_file",
    "save_mel_image", "shift_f0", "windows", "write_outputs", "write_song",
]
