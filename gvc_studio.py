"""A local web studio for conversion: convert a song, fix its pitch, look at a dataset (Gradio).

    python gvc_studio.py --model grad_pretrain/gvc.pretrain.pth [--singers data_gvc/singer] [--port 7860]

Serves http://127.0.0.1:7860 (``--host`` to change; never a public share link). Views:
- Convert: a song (upload or record), a singer from ``--singers`` or an uploaded ``.spk.npy`` (optionally mixed with a
  second one), key shift with Auto (pitch/key.py), sampler / steps / temperature / seed; results: players, downloads,
  source and converted mel images, F0 plot with the singer's 5-95 % band.
- Pitch: the source F0 as a table of notes; edit a note, snap to semitones, fix an octave in a span; download / upload
  the pitch CSV of pitch/inference.py; Convert then uses the edited F0 (gvc_inference's ``--pit`` path).
- Dataset: the dataset check of prepare/preprocess_zzz.py (table per singer, warnings, F0 histograms).

The page logic is the ``Studio`` class (plain Python, tested without a browser); ``build_app`` only lays it out.
Each browser session works in its own folder under the studio's temporary folder, removed after ``--session_minutes``
idle; conversions run one at a time per model (a lock and Gradio's queue), so tabs never mix results.
"""

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.audio import AudioError, load_audio, write_wav
from common.checkpoint import CheckpointError
from common.config import ConfigError
from common.features import FeatureError
from common.plots import new_figure, save_mel_pair_png, save_png
from conversion import Converter, InferenceError, mix_speakers, pretrained_files, write_song
from pitch.csv_io import PitchCsvError, load_csv_pitch, save_csv_pitch
from pitch.edit import PitchEditError, apply_notes_table, frame_of, notes_table, octave_fix, snap_to_semitones

log = logging.getLogger("gvc_studio")

DEFAULT_MODEL = "grad_pretrain/gvc.pretrain.pth"
DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_SESSION_MINUTES = 60.0
SOURCE_SR = 16000  # F0 and units are taken at 16 kHz
USER_ERRORS = (AudioError, InferenceError, FeatureError, CheckpointError, ConfigError, PitchCsvError, PitchEditError,
               OSError)


def voice_label(paths: list[str], weights: list[float] | None) -> str:
    """``soprano`` or ``soprano 50 % + alto 50 %``: the singers a conversion used, by file name."""
    names = [Path(p).name.removesuffix(".npy").removesuffix(".spk") for p in paths]
    if not weights:
        return names[0]
    return " + ".join(f"{n} {100 * w:.0f} %" for n, w in zip(names, weights))


class StudioError(ValueError):
    """A problem shown on the page as one line (a bad upload, a missing file, ...)."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else exc.__class__.__name__


# ----------------------------------------------------------------------------------------------------------------
# sessions: one folder each, removed when idle


class Sessions:
    """Per-session work folders in ``<root>/sessions``; a folder idle for more than ``ttl_s`` seconds is removed by
    ``sweep`` (called on every request and by a timer). Only folders this class made (they hold a marker file) are
    ever removed, whatever else ``root`` holds."""

    MARKER = ".gvc_studio_session"

    def __init__(self, root: Path, ttl_s: float):
        self.root = Path(root)
        self.dir = self.root / "sessions"  # the only folder the page serves files from (with Gradio's own cache)
        self.ttl_s = float(ttl_s)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, session_id: str) -> Path:
        return self.dir / (re.sub(r"[^A-Za-z0-9_-]", "", session_id or "")[:64] or "anonymous")

    def folder(self, session_id: str) -> Path:
        """The session's folder (made if needed), marked as used now."""
        path = self._path(session_id)
        path.mkdir(parents=True, exist_ok=True)
        (path / self.MARKER).touch()
        os.utime(path)
        return path

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove session folders unused for more than ``ttl_s``; returns the removed folders."""
        now = time.time() if now is None else now
        removed = []
        for path in self.dir.iterdir():
            if (path / self.MARKER).is_file() and now - path.stat().st_mtime > self.ttl_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def drop(self, session_id: str) -> None:
        """Remove a session's folder now (its browser tab was closed)."""
        path = self._path(session_id)
        if (path / self.MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# the page's state and results


@dataclass
class Work:
    """One browser session's state (kept in a ``gr.State``): its song, the song's F0 and the user's edit of it."""

    session: str = ""
    song: str | None = None  # the song copied into the session folder
    f0: np.ndarray | None = None  # the tracker's F0 of the song [T] Hz at 100 frames/s (source key)
    edited: np.ndarray | None = None  # the user's edited F0, same grid; None: not edited
    runs: int = 0  # conversions so far (numbers the output files)

    def pitch(self) -> np.ndarray | None:
        return self.edited if self.edited is not None else self.f0


@dataclass
class Result:
    """What one conversion produced (paths inside the session folder)."""

    wav: str
    pitch_wav: str
    mel_png: str
    f0_png: str
    message: str
    seconds: float = 0.0
    shift: float = 0.0


@dataclass
class PitchView:
    """The pitch tab after a change: the notes table, the plot, the CSV to download, a message."""

    rows: list[list]
    plot: str
    csv: str
    message: str


# ----------------------------------------------------------------------------------------------------------------
# the studio


@dataclass
class StudioOptions:
    model: str = DEFAULT_MODEL
    config: str | None = None
    singers: str = "data_gvc/singer"
    data: str = "data_gvc"
    device: str | None = None
    vocoder: str = "bigvgan"
    vocoder_model: str | None = None
    hubert_model: str | None = None
    f0_method: str | None = None
    steps: int | None = None  # the page's initial Steps (None: the model's default)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    session_minutes: float = DEFAULT_SESSION_MINUTES
    workdir: str | None = None


class Studio:
    """Everything the page does, as plain methods (the Gradio layer only wires them)."""

    def __init__(self, opts: StudioOptions):
        self.opts = opts
        root = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="gvc_studio_"))
        if not opts.workdir:  # a folder of our own: gone when the studio stops
            import atexit

            atexit.register(shutil.rmtree, root, True)
        self.sessions = Sessions(root, opts.session_minutes * 60)
        self.lock = threading.Lock()  # one conversion at a time on this model
        self.plot_lock = threading.Lock()  # preprocess_zzz's histograms use pyplot's global state
        self.missing = self._missing_pretrained()
        self.converter: Converter | None = None
        self.load_error: str | None = None
        if not self._model_missing():
            try:
                self.converter = Converter(opts.model, opts.config, opts.device, opts.vocoder, opts.vocoder_model,
                                           opts.hubert_model, opts.f0_method)
            except USER_ERRORS as exc:
                self.load_error = one_line(exc)

    # pretrained files ---------------------------------------------------------------------------------------------
    def _missing_pretrained(self) -> list[str]:
        """One line per missing pretrained file: where to get it and the offline alternative (the lines the CLI
        prints)."""
        files = pretrained_files(self.opts.model, self.opts.hubert_model, self.opts.vocoder, self.opts.vocoder_model)
        return [f.missing_line() for f in files if not Path(f.path).is_file()]

    def _model_missing(self) -> bool:
        return any(ln.startswith(f"{self.opts.model}:") for ln in self.missing)

    def status_markdown(self) -> str:
        """The page's banner: missing files (with where to get them) or the model that is loaded."""
        out = []
        if self.missing:
            out.append("**Missing pretrained files** (conversion needs them):")
            out += ["- " + re.sub(r"([_*\[\]<>])", r"\\\1", ln) for ln in self.missing]  # wraps, unlike `code`
            if self.opts.vocoder == "bigvgan":
                out.append("- Offline: restart with `--vocoder world` (WORLD, exact F0) or `--vocoder griffinlim` "
                           "(a phasey preview); no download needed.")
        if self.load_error:
            out.append(f"**The model could not be loaded:** `{self.load_error}`")
        if self.converter is not None:
            m = self.converter.model
            out.append(f"Model `{self.opts.model}` ({self.converter.cfg.grad.version}, {m.default_sampler} "
                       f"{m.default_steps} steps), vocoder `{self.opts.vocoder}`, F0 `{self.converter.f0_method}`.")
        return "\n".join(out)

    def require_converter(self) -> Converter:
        if self.converter is None:
            raise StudioError(self.load_error or "the model is not loaded: missing pretrained files (listed at the top "
                              "of the page): " + ", ".join(ln.split(":")[0] for ln in self.missing))
        return self.converter

    def defaults(self) -> dict:
        """Sampler choices and the model version's defaults for the page's controls."""
        from grad.samplers import SAMPLERS

        if self.converter is None:
            return {"samplers": sorted(SAMPLERS), "sampler": "euler", "steps": 10, "temperature": 1.015}
        m, cfg = self.converter.model, self.converter.cfg
        kind = "score" if cfg.grad.decoder == "score" else "flow"
        steps = m.default_steps if self.opts.steps is None else self.opts.steps
        return {"samplers": [k for k, v in SAMPLERS.items() if v.kind == kind], "sampler": m.default_sampler,
                "steps": steps, "temperature": m.default_temperature}

    # inputs -------------------------------------------------------------------------------------------------------
    def singer_choices(self) -> list[str]:
        """The ``.spk.npy`` files of ``--singers`` (names without the suffix), sorted."""
        folder = Path(self.opts.singers)
        if not folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".spk.npy") for p in folder.glob("*.spk.npy"))

    def singer_path(self, choice: str | None, upload: str | None) -> str | None:
        """An uploaded ``.spk.npy`` wins over the list's choice; None when neither is given."""
        if upload:
            self.check_size(upload)
            if not str(upload).endswith(".npy"):
                raise StudioError(f"{Path(upload).name}: a singer file must be a .spk.npy")
            return str(upload)
        if choice:
            path = Path(self.opts.singers) / f"{choice}.spk.npy"
            if not path.is_file():
                raise StudioError(f"{path}: singer not found (is --singers right?)")
            return str(path)
        return None

    def check_size(self, path: str) -> None:
        size = Path(path).stat().st_size
        if size > self.opts.max_upload_mb * 1e6:
            raise StudioError(f"{Path(path).name}: {size / 1e6:.1f} MB is over the upload limit of "
                              f"{self.opts.max_upload_mb:g} MB (--max_upload_mb)")

    def load_song(self, work: Work, upload: str | None) -> tuple[Work, str]:
        """A new song for the session: checked (size, readable as audio), copied to the session folder, its F0
        taken. Returns the new state and a one-line message. The previous edit of the pitch is dropped."""
        folder = self.sessions.folder(work.session)
        if not upload:
            return Work(session=work.session, runs=work.runs), "No song."
        self.check_size(upload)
        try:
            wav16 = load_audio(upload, SOURCE_SR)
        except AudioError as exc:  # one line naming the file as the user knows it, not the upload's temp path
            raise StudioError(str(exc).replace(str(Path(upload).parent) + os.sep, "")) from None
        if not np.abs(wav16).max() > 0:
            raise StudioError(f"{Path(upload).name}: the song is silent")
        song = folder / f"song{Path(upload).suffix.lower()}"
        if Path(upload).resolve() != song.resolve():
            shutil.copyfile(upload, song)
        with self.lock:
            conv = self.require_converter()
            f0 = conv.f0(wav16)
        voiced = int((f0 > 0).sum())
        msg = (f"{Path(upload).name}: {len(wav16) / SOURCE_SR:.2f} s, {voiced / 100:.2f} s voiced "
               f"(F0 by {conv.f0_method})")
        return Work(session=work.session, song=str(song), f0=f0, runs=work.runs), msg

    # key -----------------------------------------------------------------------------------------------------------
    def singer_stats(self, singer: str | None, singer2: str | None = None, mix: float = 0.0) -> dict | None:
        """The target singer's F0 statistics (pitch/key.py; a mix of two singers: ``mix_stats``). Raises
        KeyStatsError (one line naming the step that writes them)."""
        from pitch.key import load_singer_stats, mix_stats

        if not singer:
            return None
        if singer2 and mix > 0:
            return mix_stats([load_singer_stats(singer), load_singer_stats(singer2)], [1.0 - mix, mix])
        return load_singer_stats(singer)

    def auto_shift(self, work: Work, singer: str | None, singer2: str | None = None, mix: float = 0.0
                   ) -> tuple[int, str]:
        """The whole-semitone shift that puts the song's F0 in the singer's range, and why (pitch/key.py)."""
        from pitch.key import KeyStatsError, suggest_shift

        if work.pitch() is None:
            raise StudioError("load a song first")
        if not singer:
            raise StudioError("choose a singer first")
        try:
            stats = self.singer_stats(singer, singer2, mix)
        except KeyStatsError as exc:
            raise StudioError(one_line(exc)) from None
        return suggest_shift(work.pitch(), stats)

    # conversion ----------------------------------------------------------------------------------------------------
    def convert(self, work: Work, singer: str | None, singer2: str | None = None, mix: float = 0.0,
                shift: float = 0.0, sampler: str | None = None, steps: int | None = None,
                temperature: float | None = None, seed: int | None = None, report=None) -> tuple[Work, Result]:
        """Convert the session's song (with the edited F0 when there is one) -> outputs in the session folder.

        ``report(fraction, desc)`` is told each studio stage; the library's own stages (units, acoustic model,
        vocoder) show through their progress bars. One conversion at a time on this model (``self.lock``).
        """
        report = report or (lambda *_a, **_k: None)
        if not work.song or work.f0 is None:
            raise StudioError("load a song first")
        if not singer:
            raise StudioError("choose a singer (from the list or an uploaded .spk.npy)")
        if not 0.0 <= float(mix) <= 1.0:
            raise StudioError(f"mix weight {mix}: must be within 0..1")
        folder = self.sessions.folder(work.session)
        conv = self.require_converter()
        paths, weights = ([singer, singer2], [1.0 - float(mix), float(mix)]) if singer2 and mix > 0 else ([singer],
                                                                                                          None)
        spk = mix_speakers(paths, weights, conv.cfg.data.speaker_backend)
        work.runs += 1
        stem = folder / f"convert{work.runs:03d}"
        pit = stem.with_suffix(".csv")
        save_csv_pitch(pit, work.pitch())  # the --pit path: the tracker's F0 or the user's edit of it
        sr = conv.cfg.data.sampling_rate
        seed = None if seed is None or (isinstance(seed, float) and not np.isfinite(seed)) else int(seed)
        t0 = time.perf_counter()
        with self.lock:
            report(0.0, "converting")
            result = conv.convert(work.song, spk, None, str(pit), shift=float(shift), steps=steps,
                                  temperature=temperature, sampler=sampler or None, seed=seed)
            report(0.8, "pitch sine")
            pitch_wav = conv.pitch_wav(result.f0, seed)
            report(0.85, "F0 of the result")
            import soxr

            out_f0 = conv.f0(soxr.resample(result.wav, sr, SOURCE_SR, quality="HQ").astype(np.float32))
        seconds = time.perf_counter() - t0
        out = Path(f"{stem}_{Path(singer).name.removesuffix('.spk.npy')}.wav")
        write_song(out, result.wav, sr)
        pitch_out = Path(f"{stem}_pitch.wav")
        write_wav(pitch_out, pitch_wav, sr)
        report(0.9, "images")
        mel_png, f0_png = Path(f"{stem}_mel.png"), Path(f"{stem}_f0.png")
        from common.mel import mel_from_config

        src_mel = mel_from_config(torch.from_numpy(load_audio(work.song, sr)), conv.cfg.data)
        save_mel_pair_png(src_mel.numpy(), result.mel.float().numpy(), mel_png)
        try:
            stats = self.singer_stats(singer, singer2, mix)
        except ValueError:  # KeyStatsError: no band on the plot
            stats = None
        save_f0_plot(result.f0, out_f0, stats, f0_png)
        length = len(result.wav) / sr
        edited = " with the edited pitch" if work.edited is not None else ""
        msg = (f"Converted {length:.2f} s{edited} in {seconds:.1f} s: shift {float(shift):+g}, "
               f"{sampler or conv.model.default_sampler}, {steps if steps is not None else conv.model.default_steps} "
               f"steps, vocoder {result.vocoder}, voice {voice_label(paths, weights)}")
        return work, Result(str(out), str(pitch_out), str(mel_png), str(f0_png), msg, length, float(shift))

    # pitch editing -------------------------------------------------------------------------------------------------
    def pitch_view(self, work: Work, message: str = "") -> PitchView:
        """The pitch tab for the session's current F0 (edited or not)."""
        f0 = work.pitch()
        if f0 is None:
            return PitchView([], "", "", message or "Load a song on the Convert tab first.")
        folder = self.sessions.folder(work.session)
        csv = folder / ("pitch_edited.csv" if work.edited is not None else "pitch.csv")
        save_csv_pitch(csv, f0)
        plot = folder / f"pitch_{int(time.time() * 1000)}.png"
        for old in folder.glob("pitch_*.png"):
            old.unlink(missing_ok=True)
        save_f0_plot(f0, None, None, plot, edited_from=work.f0 if work.edited is not None else None)
        return PitchView(notes_table(f0), str(plot), str(csv), message)

    def _span(self, work: Work, start_s: float | None, end_s: float | None) -> tuple[np.ndarray, int, int]:
        f0 = work.pitch()
        if f0 is None:
            raise StudioError("load a song first")
        s = frame_of(start_s or 0.0, len(f0))
        e = len(f0) if end_s in (None, 0, 0.0) else frame_of(end_s, len(f0))
        return f0, s, e

    def edit_snap(self, work: Work, start_s: float | None, end_s: float | None, strength: float = 1.0,
                  per_note: bool = True) -> tuple[Work, PitchView]:
        f0, s, e = self._span(work, start_s, end_s)
        work.edited = snap_to_semitones(f0, s, e, float(strength), per_note)
        return work, self.pitch_view(work, f"Snapped {s / 100:.2f}-{e / 100:.2f} s to semitones "
                                           f"({'per note' if per_note else 'per frame'}, strength {strength:g}).")

    def edit_octave(self, work: Work, start_s: float | None, end_s: float | None, direction: str = "auto"
                    ) -> tuple[Work, PitchView]:
        octaves = {"up": 1, "down": -1, "auto": None}[direction]
        f0, s, e = self._span(work, start_s, end_s)
        work.edited = octave_fix(f0, s, e, octaves)
        return work, self.pitch_view(work, f"Octave fix ({direction}) on {s / 100:.2f}-{e / 100:.2f} s.")

    def edit_table(self, work: Work, rows: list[list]) -> tuple[Work, PitchView]:
        f0 = work.pitch()
        if f0 is None:
            raise StudioError("load a song first")
        edited, changed = apply_notes_table(f0, [list(r) for r in rows])
        if changed:
            work.edited = edited
        return work, self.pitch_view(work, f"{changed} note(s) changed." if changed else "No note changed.")

    def reset_pitch(self, work: Work) -> tuple[Work, PitchView]:
        work.edited = None
        return work, self.pitch_view(work, "Back to the tracker's F0.")

    def upload_pitch(self, work: Work, path: str | None) -> tuple[Work, PitchView]:
        """An edited pitch CSV (the format of pitch/inference.py) replaces the F0; a length other than the song's
        is padded / cut at conversion, as the CLI's --pit does."""
        if not path:
            return work, self.pitch_view(work)
        if work.f0 is None:
            raise StudioError("load a song first")
        self.check_size(path)
        f0 = load_csv_pitch(path)
        work.edited = f0
        note = "" if abs(len(f0) - len(work.f0)) <= 6 else (f" ({len(f0)} rows for the song's {len(work.f0)} frames:"
                                                            " padded or cut at conversion)")
        return work, self.pitch_view(work, f"{Path(path).name}: {len(f0)} frames loaded{note}.")

    # dataset -------------------------------------------------------------------------------------------------------
    def dataset_report(self, work: Work, data_dir: str) -> tuple[list[list], list[str], str]:
        """preprocess_zzz's dataset check of a data_gvc folder: rows per singer, F0 histogram PNGs, warnings."""
        from common.config import load_config
        from common.features import item_for
        from prepare.preprocess_zzz import (
            check_filelists,
            plot_histograms,
            report,
            singer_audio_stats,
            warnings_for,
        )

        root = Path(data_dir or "")
        if not (root / "pitch").is_dir():
            raise StudioError(f"{root}: not a data_gvc folder (no pitch/ inside; run the prepare steps first)")
        cfg = self.converter.cfg if self.converter is not None else load_config(self.opts.config)
        folder = self.sessions.folder(work.session) / "dataset"
        folder.mkdir(exist_ok=True)
        # every clip with an F0 file, whatever the filelists say (they hold paths relative to where they were made)
        items = [item_for(root, p.parent.name, p.name.removesuffix(".pit.npy"))
                 for p in sorted((root / "pitch").glob("*/*.pit.npy"))]
        index = folder / "index.txt"
        index.write_text("".join(i.line() + "\n" for i in items), encoding="utf-8")
        problems, stats = check_filelists([index], cfg.grad.n_mels, cfg.grad.n_vecs)
        summary = report(stats, cfg.data.sampling_rate / cfg.data.hop_length)
        for singer, a in singer_audio_stats(root).items():
            if singer in summary:
                summary[singer].update(a)
        for old in folder.glob("*.f0.png"):
            old.unlink()
        with self.plot_lock:
            plots = [str(p) for p in plot_histograms(stats, folder)] if stats else []
        rows = [[name, s["clips"], s["minutes"], s["voiced_ratio"], s["f0_p5_hz"], s["f0_p95_hz"],
                 s.get("silence_ratio", 0.0), s.get("clipping_ratio", 0.0), s["suspected_octave_frames"]]
                for name, s in summary.items()]
        notes = [f"- WARNING {w}" for w in warnings_for(summary, None)]
        notes += [f"- PROBLEM {p}" for p in problems[:20]]
        if len(problems) > 20:
            notes.append(f"- ... and {len(problems) - 20} more problems")
        head = f"{len(items)} clips of {len(summary)} singers in {root}" + (": feature set OK" if not problems else "")
        return rows, plots, "\n".join([head, *notes])


DATASET_COLUMNS = ["singer", "clips", "minutes", "voiced ratio", "F0 p5 Hz", "F0 p95 Hz", "silence ratio",
                   "clipping ratio", "octave-error frames"]
NOTES_COLUMNS = ["note", "start s", "end s", "Hz", "name"]


# ----------------------------------------------------------------------------------------------------------------
# images


def save_f0_plot(f0: np.ndarray, converted: np.ndarray | None, stats: dict | None, path: Path,
                 edited_from: np.ndarray | None = None) -> None:
    """F0 ``[T]`` (shifted source, or the pitch being edited) against time; optionally the converted song's F0, the
    singer's 5-95 % band and the unedited F0 (thin grey)."""
    def voiced(x):
        x = np.asarray(x, dtype=np.float64)
        return np.where(x > 0, x, np.nan)

    fig, ax = new_figure((10, 3.2))
    t = np.arange(len(f0)) / 100
    if stats:
        ax.axhspan(stats["p5_hz"], stats["p95_hz"], color="tab:green", alpha=0.15, label="singer 5-95 %")
        ax.axhline(stats["p50_hz"], color="tab:green", lw=0.8, ls="--")
    if edited_from is not None:
        ax.plot(np.arange(len(edited_from)) / 100, voiced(edited_from), color="0.6", lw=0.8, label="tracker")
    ax.plot(t, voiced(f0), color="tab:blue", lw=1.2, label="source (shifted)" if converted is not None else "F0")
    if converted is not None:
        ax.plot(np.arange(len(converted)) / 100, voiced(converted), color="tab:orange", lw=1.0, label="converted")
    ax.set_yscale("log")
    note_ticks(ax)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("F0")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    save_png(fig, path, dpi=80)


def note_ticks(ax) -> None:
    """Label a log-frequency axis at the C and A of each octave (``A3 220``), not in powers of ten."""
    from matplotlib.ticker import NullFormatter, NullLocator

    from pitch.notes import midi_to_hz, note_name

    lo, hi = ax.get_ylim()
    degrees = (0, 9) if hi / lo > 2.9 else (0, 2, 4, 5, 7, 9, 11)  # C and A; the white keys within ~1.5 octaves
    midis = [m for m in range(24, 97) if m % 12 in degrees and lo <= float(midi_to_hz(m)) <= hi]
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks([float(midi_to_hz(m)) for m in midis],
                  [f"{note_name(float(midi_to_hz(m)))} {float(midi_to_hz(m)):.0f}" for m in midis])


# ----------------------------------------------------------------------------------------------------------------
# the Gradio layer (thin: every handler calls one Studio method and turns StudioError into a message)


def build_app(studio: Studio):
    import gradio as gr

    d = studio.defaults()
    singers = studio.singer_choices()
    queue_id = "model"  # every event that uses the model shares one queue of one

    def guard(fn):
        """Run a handler; a user error becomes gr.Error (a message on the page), never a traceback."""
        import functools

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            studio.sessions.sweep()
            try:
                return fn(*args, **kwargs)
            except (StudioError, *USER_ERRORS) as exc:
                raise gr.Error(one_line(exc), print_exception=False) from None
            except ValueError as exc:  # KeyStatsError and the library's other one-line errors
                raise gr.Error(one_line(exc), print_exception=False) from None
        return wrapped

    def session_work(work: Work, request: gr.Request) -> Work:
        if not work.session:
            work.session = request.session_hash or "anonymous"
        return work

    def pitch_outputs(view: PitchView):
        return view.rows, view.plot or None, view.csv or None, view.message

    @guard
    def on_song(upload, work, request: gr.Request):
        work = session_work(work, request)
        work, msg = studio.load_song(work, upload)
        return (work, msg, upload, *pitch_outputs(studio.pitch_view(work)))

    @guard
    def on_auto(work, choice, upload, choice2, upload2, mix, request: gr.Request):
        work = session_work(work, request)
        singer, singer2 = studio.singer_path(choice, upload), studio.singer_path(choice2, upload2)
        shift, reason = studio.auto_shift(work, singer, singer2, float(mix or 0))
        return shift, reason

    @guard
    def on_convert(work, choice, upload, choice2, upload2, mix, shift, sampler, steps, temperature, seed,
                   request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        work = session_work(work, request)
        singer = studio.singer_path(choice, upload)
        singer2 = studio.singer_path(choice2, upload2)
        work, res = studio.convert(work, singer, singer2, float(mix or 0), float(shift or 0),
                                   sampler, None if steps is None else int(steps), temperature,
                                   None if seed in (None, "") else int(seed),
                                   report=lambda frac, desc: progress(frac, desc=desc))
        return work, res.message, res.wav, res.pitch_wav, res.mel_png, res.f0_png, res.wav

    @guard
    def on_table(work, rows):
        work, view = studio.edit_table(work, rows.values.tolist() if hasattr(rows, "values") else rows)
        return (work, *pitch_outputs(view))

    @guard
    def on_snap(work, start, end, strength, per_note):
        work, view = studio.edit_snap(work, start, end, float(strength), bool(per_note))
        return (work, *pitch_outputs(view))

    @guard
    def on_octave(work, start, end, direction):
        work, view = studio.edit_octave(work, start, end, direction)
        return (work, *pitch_outputs(view))

    @guard
    def on_reset(work):
        work, view = studio.reset_pitch(work)
        return (work, *pitch_outputs(view))

    @guard
    def on_pitch_upload(work, path):
        work, view = studio.upload_pitch(work, path)
        return (work, *pitch_outputs(view))

    def on_unload(request: gr.Request):
        studio.sessions.drop(request.session_hash)

    @guard
    def on_dataset(work, data_dir, request: gr.Request):
        work = session_work(work, request)
        rows, plots, text = studio.dataset_report(work, data_dir)
        return rows, plots, text

    ttl = max(60, int(studio.sessions.ttl_s))  # Gradio's own copies of uploads and results age out alike
    with gr.Blocks(title="Grad-SVC studio", delete_cache=(min(ttl, 3600), ttl)) as app:
        work = gr.State(Work())
        gr.Markdown("## Grad-SVC studio")
        gr.Markdown(studio.status_markdown(), elem_id="status")
        with gr.Tab("Convert", elem_id="tab-convert"):
            with gr.Row():
                with gr.Column():
                    song = gr.Audio(label="Song (upload or record)", type="filepath", sources=["upload", "microphone"],
                                    elem_id="song")
                    song_info = gr.Markdown(elem_id="song-info")
                with gr.Column():
                    singer = gr.Dropdown(singers, value=singers[0] if singers else None, label="Singer",
                                         elem_id="singer")
                    singer_upload = gr.File(label="or a singer file (.spk.npy)", file_types=[".npy"], type="filepath",
                                            height=130, elem_id="singer-upload")
                    with gr.Row():
                        singer2 = gr.Dropdown([""] + singers, value="", label="Second singer (mix)",
                                              elem_id="singer2")
                        mix = gr.Slider(0, 1, value=0, step=0.05, label="Mix weight of the second singer",
                                        elem_id="mix")
                    singer2_upload = gr.File(label="or a second singer file (.spk.npy)", file_types=[".npy"],
                                             type="filepath", height=100, elem_id="singer2-upload")
            with gr.Row():
                shift = gr.Number(value=0, label="Key shift (semitones)", precision=1, minimum=-24, maximum=24,
                                  elem_id="shift")
                auto = gr.Button("Auto", elem_id="auto")
                auto_reason = gr.Markdown(elem_id="auto-reason")
            with gr.Row():
                sampler = gr.Dropdown(d["samplers"], value=d["sampler"], label="Sampler", elem_id="sampler")
                steps = gr.Number(value=d["steps"], precision=0, minimum=0, label="Steps (0: the encoder's mel)",
                                  elem_id="steps")
                temperature = gr.Number(value=d["temperature"], minimum=0, label="Temperature", elem_id="temperature")
                seed = gr.Number(value=1234, precision=0, label="Seed", elem_id="seed")
            convert = gr.Button("Convert", variant="primary", elem_id="convert")
            message = gr.Markdown(elem_id="message")
            with gr.Row():
                src_player = gr.Audio(label="Source", type="filepath", interactive=False, elem_id="source-player")
                out_player = gr.Audio(label="Converted", type="filepath", interactive=False, elem_id="out-player")
                pitch_player = gr.Audio(label="Pitch sine", type="filepath", interactive=False, elem_id="pitch-player")
            download = gr.File(label="Download the converted wav", interactive=False, height=100, elem_id="download")
            mel_image = gr.Image(label="Mel: source (top) and converted", type="filepath", interactive=False,
                                 elem_id="mel-image")
            f0_image = gr.Image(label="F0: source shifted, converted, singer's 5-95 % band", type="filepath",
                                interactive=False, elem_id="f0-image")
        with gr.Tab("Pitch", elem_id="tab-pitch"):
            gr.Markdown("The song's F0 in its own key (before the shift). Edit a note's Hz or name (A4, C#3), then "
                        "Apply; Convert uses the edited F0.")
            notes = gr.Dataframe(headers=NOTES_COLUMNS, datatype=["number", "number", "number", "number", "str"],
                                 interactive=True, label="Notes", elem_id="notes")
            apply_table = gr.Button("Apply table edits", elem_id="apply-table")
            with gr.Row():
                span_start = gr.Number(value=0, label="Span start (s)", elem_id="span-start")
                span_end = gr.Number(value=0, label="Span end (s, 0 = to the end)", elem_id="span-end")
                strength = gr.Slider(0, 1, value=1, step=0.1, label="Snap strength", elem_id="strength")
                per_note = gr.Checkbox(value=True, label="Snap whole notes (keep vibrato)", elem_id="per-note")
            with gr.Row():
                snap = gr.Button("Snap to semitones", elem_id="snap")
                octave_dir = gr.Radio(["auto", "down", "up"], value="auto", label="Octave", elem_id="octave-dir")
                octave = gr.Button("Octave fix", elem_id="octave")
                reset = gr.Button("Reset to the tracker's F0", elem_id="reset")
            pitch_msg = gr.Markdown(elem_id="pitch-msg")
            pitch_plot = gr.Image(label="F0 being edited (grey: the tracker's)", type="filepath", interactive=False,
                                  elem_id="pitch-plot")
            with gr.Row():
                pitch_csv = gr.File(label="Download the pitch CSV", interactive=False, elem_id="pitch-csv")
                pitch_upload = gr.File(label="Upload an edited pitch CSV", file_types=[".csv"], type="filepath",
                                       elem_id="pitch-upload")
        with gr.Tab("Dataset", elem_id="tab-dataset"):
            data_dir = gr.Textbox(value=studio.opts.data, label="data_gvc folder", elem_id="data-dir")
            check = gr.Button("Check", elem_id="check")
            data_text = gr.Markdown(elem_id="data-text")
            data_table = gr.Dataframe(headers=DATASET_COLUMNS, interactive=False, label="Singers",
                                      elem_id="data-table")
            data_plots = gr.Gallery(label="F0 histograms", columns=2, object_fit="contain", height="auto",
                                    preview=False, elem_id="data-plots")  # every histogram whole, no scrolling


        pitch_out = [notes, pitch_plot, pitch_csv, pitch_msg]
        song.upload(on_song, [song, work], [work, song_info, src_player, *pitch_out], concurrency_id=queue_id)
        song.stop_recording(on_song, [song, work], [work, song_info, src_player, *pitch_out], concurrency_id=queue_id)
        auto.click(on_auto, [work, singer, singer_upload, singer2, singer2_upload, mix], [shift, auto_reason])
        convert.click(on_convert, [work, singer, singer_upload, singer2, singer2_upload, mix, shift, sampler, steps,
                                   temperature, seed],
                      [work, message, out_player, pitch_player, mel_image, f0_image, download],
                      concurrency_id=queue_id, concurrency_limit=1)
        apply_table.click(on_table, [work, notes], [work, *pitch_out])
        snap.click(on_snap, [work, span_start, span_end, strength, per_note], [work, *pitch_out])
        octave.click(on_octave, [work, span_start, span_end, octave_dir], [work, *pitch_out])
        reset.click(on_reset, [work], [work, *pitch_out])
        pitch_upload.upload(on_pitch_upload, [work, pitch_upload], [work, *pitch_out])
        check.click(on_dataset, [work, data_dir], [data_table, data_plots, data_text])
        app.unload(on_unload)
    return app


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Grad-SVC studio: a local web page for conversion (Gradio)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"gvc checkpoint (default {DEFAULT_MODEL})")
    ap.add_argument("-c", "--config", default=None, help="config overlay; our checkpoints carry their own config")
    ap.add_argument("--singers", default="data_gvc/singer", help="folder of target singers' .spk.npy files")
    ap.add_argument("--data", default="data_gvc", help="data_gvc folder the Dataset view opens with")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--steps", type=int, default=None,
                    help="the page's initial decoder steps (default: the model's; 0 for a model trained for minutes)")
    ap.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="upload size limit (MB)")
    ap.add_argument("--session_minutes", type=float, default=DEFAULT_SESSION_MINUTES,
                    help="a session's files are removed after this many idle minutes")
    ap.add_argument("--workdir", default=None, help="folder for the sessions' files (default: a new temp folder)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--vocoder", choices=["bigvgan", "griffinlim", "world"], default="bigvgan",
                    help="without the NSF-BigVGAN checkpoint: world or griffinlim (offline)")
    ap.add_argument("--vocoder_model", default=None, help="default bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth")
    ap.add_argument("--hubert_model", default=None, help="default hubert_pretrain/hubert-soft-0d54a1f4.pt")
    ap.add_argument("--f0", "--method", dest="f0_method", default=None, help="F0 method (default: the config's)")
    return ap


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up requests to itself
    args = build_parser().parse_args(argv)
    opts = StudioOptions(model=args.model, config=args.config, singers=args.singers, data=args.data,
                         device=args.device, vocoder=args.vocoder, vocoder_model=args.vocoder_model,
                         hubert_model=args.hubert_model, f0_method=args.f0_method, steps=args.steps,
                         max_upload_mb=args.max_upload_mb,
                         session_minutes=args.session_minutes, workdir=args.workdir)
    studio = Studio(opts)
    # Gradio's own uploads and served copies live in the studio's folder too; allowed_paths: the sessions only
    os.environ["GRADIO_TEMP_DIR"] = str(studio.sessions.root / "gradio")
    for line in studio.missing:
        log.warning(line)
    if studio.load_error:
        log.error(studio.load_error)
    app = build_app(studio)

    def sweeper():  # idle sessions are removed even when nobody calls the page
        while True:
            time.sleep(max(10.0, min(300.0, studio.sessions.ttl_s / 4)))
            studio.sessions.sweep()

    threading.Thread(target=sweeper, daemon=True).start()
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
               allowed_paths=[str(studio.sessions.dir)], max_file_size=int(args.max_upload_mb * 1e6),
               show_error=True, quiet=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
