"""F0 extraction on the 10 ms grid (praat, crepe, crepe-tiny, harvest, fcpe; ``f0``), the editable pitch CSV
(``csv_io``), notes in Hz, MIDI numbers and names (``notes``), pitch editing by notes (``edit``) and the automatic
key from a singer's F0 statistics (``key``)."""

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
