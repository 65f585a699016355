"""F0 extraction on the 10 ms grid (praat, crepe, crepe-tiny, harvest, fcpe) and the editable pitch CSV."""

from pitch.csv_io import PitchCsvError, load_csv_pitch, save_csv_pitch
from pitch.f0 import METHODS, compute_f0, frame_count, praat_frame_count, round_f0, shift_f0

__all__ = [
    "METHODS",
    "PitchCsvError",
    "compute_f0",
    "frame_count",
    "load_csv_pitch",
    "praat_frame_count",
    "round_f0",
    "save_csv_pitch",
    "shift_f0",
]
