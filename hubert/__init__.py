"""HuBERT-soft content encoder: 16 kHz audio -> 256-d soft units at 50 frames/s (``hubert.model``)."""

from hubert.model import DEFAULT_CHECKPOINT, HubertSoft, compute_units, load_hubert

__all__ = ["DEFAULT_CHECKPOINT", "HubertSoft", "compute_units", "load_hubert"]
