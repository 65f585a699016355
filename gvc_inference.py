"""Convert a song (or a folder of songs) to another singer's voice, every stage in one process.

    python gvc_inference.py --model gvc.pth --spk ./data_gvc/singer/your_singer.spk.npy --wave test.wav --shift 0
    python gvc_inference.py --model gvc.pth --spk singer.spk.npy --wave test.wav --vec test.vec.npy --pit test.csv

Stages: HuBERT-soft units (or ``--vec``) and F0 (or an edited ``--pit`` CSV) from the 16 kHz input -> the acoustic
model in windows of ``infer.out_chunk`` frames crossfaded over their context frames -> NSF-BigVGAN (or the
Griffin-Lim preview) in crossfaded windows -> ``--out`` (32 kHz), the F0 check wav and a mel image beside it.
Each model is loaded once, also in folder mode. This module imports nothing from the trainer. On a terminal each stage
shows a progress bar on stderr (folder mode: songs done of all); memory does not grow with the song's length beyond
its features, mel and audio (bench/bench_cli_memory.py). The pipeline itself is the ``conversion`` library; this
script parses the flags, dispatches folder mode and turns errors into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from common.audio import AudioError, list_audio
from common.checkpoint import CheckpointError
from common.config import ConfigError
from common.features import FeatureError
from common.io import DiskFullError
from common.runtime import drop_primitive_cache, tune_allocator
from conversion import (
    Converter,
    InferenceError,
    companion_paths,
    log_rss,
    mix_speakers,
    pretrained_files,
    shift_f0,
    write_outputs,
)

log = logging.getLogger("gvc_inference")

DEFAULT_OUT = "gvc_out.wav"


def shift_arg(text: str) -> float | str:
    """``--shift``: semitones, or ``auto`` (pitch/key.py)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: semitones (a number) or 'auto'") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Grad-SVC conversion")
    ap.add_argument("-c", "--config", default=None, help="config overlay; our checkpoints carry their own config")
    ap.add_argument("--model", required=True, help="gvc.pth, the official gvc.pretrain.pth or a training checkpoint")
    ap.add_argument("--spk", required=True, nargs="+", help="target singer .spk.npy (several: a mix)")
    ap.add_argument("--spk_weights", type=float, nargs="+", default=None, help="mixing weights of --spk files")
    ap.add_argument("--wave", required=True, help="input song, or a folder of songs (converted recursively)")
    ap.add_argument("--vec", default=None, help="HuBERT units from hubert/inference.py (else computed)")
    ap.add_argument("--pit", default=None, help="F0 CSV from pitch/inference.py, may be edited (else computed)")
    ap.add_argument("--shift", type=shift_arg, default=0,
                    help="pitch shift in semitones, or 'auto': per song, the whole shift that puts its F0 into the "
                         "--spk singer's range (from <singer>.f0.json beside the .spk.npy, written by step 6)")
    ap.add_argument("--temperature", "--rature", dest="temperature", type=float, default=None,
                    help="sampling temperature (V2 divides the noise by it, V3 multiplies; default 1.015)")
    ap.add_argument("--steps", type=int, default=None,
                    help="decoder steps (default: V3 10, V2 20); 0 vocodes the encoder's prior mel mu without the "
                         "decoder (for a model trained for minutes)")
    ap.add_argument("--solver", "--sampler", dest="sampler", default=None,
                    help="V3/rectified: euler, heun; V2: ml, euler_sde, euler_ode, dpm1, dpm2, dpm3")
    ap.add_argument("--seed", type=int, default=None, help="makes the output reproducible bit for bit")
    ap.add_argument("--out", default=None, help=f"output wav (default {DEFAULT_OUT}; a folder in folder mode)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--half", action="store_true", help="float16 autocast for the acoustic model (CUDA only)")
    ap.add_argument("--batch", type=int, default=None,
                    help="acoustic-model and vocoder windows (24 s each) run this many at a time: faster on a "
                         "GPU for long songs, more memory; the same output (default: infer.batch_windows, 1)")
    ap.add_argument("--vocoder", choices=["bigvgan", "griffinlim", "world"], default="bigvgan",
                    help="without the NSF-BigVGAN checkpoint: world (WORLD from the mel's envelope, the F0 exact) "
                         "or griffinlim (a phasey preview)")
    ap.add_argument("--vocoder_model", default=None, help="default bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth")
    ap.add_argument("--hubert_model", default=None, help="default hubert_pretrain/hubert-soft-0d54a1f4.pt")
    ap.add_argument("--f0", "--method", dest="f0_method", default=None,
                    help="F0 method: praat (default), crepe, crepe-tiny, harvest, fcpe")
    ap.add_argument("--f0_fix", choices=["none", "octave"], default="none",
                    help="octave: fold back isolated octave jumps shorter than 150 ms (default none, as the original)")
    ap.add_argument("--no_png", action="store_true", help="do not render the mel image")
    ap.add_argument("--workers", type=int, default=1,
                    help="folder mode: processes, each with its own models (default 1)")
    ap.add_argument("--overwrite", action="store_true",
                    help="folder mode: convert songs whose output already exists again (default: skip them)")
    return ap


def check_options(args, cfg) -> None:
    """Refuse bad settings before any work (a sampler of the other decoder, zero steps, an unknown F0 method, ...)."""
    from grad.samplers import get_sampler
    from pitch.f0 import METHODS

    kind = "score" if cfg.grad.decoder == "score" else "flow"
    try:
        get_sampler(args.sampler or str(cfg.grad.sampler), kind)
    except ValueError as exc:
        raise InferenceError(f"--sampler: {exc}") from None
    if args.steps is not None and args.steps < 0:
        raise InferenceError(f"--steps {args.steps}: at least 1 (or 0: the encoder's prior mel)")
    if args.temperature is not None and not (np.isfinite(args.temperature) and args.temperature >= 0):
        raise InferenceError(f"--temperature {args.temperature}: must be finite and >= 0")
    if args.temperature == 0 and kind == "score":
        raise InferenceError("--temperature 0: V2 divides the noise by the temperature; use a value > 0")
    method = args.f0_method or cfg.data.f0_method
    if method not in METHODS:
        raise InferenceError(f"--f0 {method}: unknown F0 method; choose one of {', '.join(METHODS)}")
    if args.batch is not None and args.batch < 1:
        raise InferenceError(f"--batch {args.batch}: at least 1")
    if args.shift != "auto":
        shift_f0(np.zeros(1), args.shift)  # an absurd shift


def folder_jobs(wave: Path, out_root: Path, png: bool, extra: dict) -> list:
    """One job per song under ``wave``: the output mirrors its relative path as ``.wav``; songs that would share an
    output (``a.wav`` and ``a.flac``) keep their format in the name (``a_wav.wav``, ``a_flac.wav``)."""
    from common.filewalk import Job, mirror_path

    files = list_audio(wave)
    outs = [mirror_path(f, wave, out_root, ".wav") for f in files]
    shared = {o for o in outs if outs.count(o) > 1}
    jobs = []
    for src, out in zip(files, outs):
        if out in shared:
            out = out.with_name(f"{src.stem}_{src.suffix.lstrip('.').lower()}.wav")
        jobs.append(Job(src, [out] + ([companion_paths(out)[1]] if png else []), extra))
    return jobs


def check_pretrained(args) -> None:
    """Every pretrained file this run needs, before any is loaded: all the missing ones in one error, each with the
    flag that gives its path and the offline alternative."""
    from common.checkpoint import require_pretrained

    require_pretrained(pretrained_files(args.model, args.hubert_model, args.vocoder, args.vocoder_model,
                                        units_given=args.vec is not None and not Path(args.wave).is_dir()))


def make_converter(args) -> Converter:
    return Converter(args.model, args.config, args.device, args.vocoder, args.vocoder_model, args.hubert_model,
                     args.f0_method, args.half, args.batch, f0_fix=getattr(args, "f0_fix", None))


def _folder_converter(args, spk: np.ndarray):
    """Worker state of folder mode: its own converter (models loaded once per process) and the speaker."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")  # a spawned worker's lines too
    return make_converter(args), spk


def _convert_job(job, state) -> None:
    converter, spk = state
    opts = job.extra
    conv = converter.convert(str(job.src), spk, **opts["convert"])
    write_outputs(conv, job.outputs[0], converter.cfg.data.sampling_rate, None, opts["png"])


def run(args) -> int:
    check_pretrained(args)
    key = None  # --shift auto: pitch.key.AutoShift, chosen per song from its F0 and the singer's F0 statistics
    if args.shift == "auto":  # read before any model is loaded
        from pitch.key import KeyStatsError, auto_shift

        try:
            key = auto_shift(args.spk, args.spk_weights)
        except KeyStatsError as exc:
            raise InferenceError(str(exc)) from None
    converter = make_converter(args)
    log_rss("load")
    cfg = converter.cfg
    check_options(args, cfg)
    spk = mix_speakers(args.spk, args.spk_weights, cfg.data.speaker_backend)
    if args.vocoder == "griffinlim":
        log.warning("vocoder: Griffin-Lim PREVIEW (no NSF-BigVGAN); expect phasey, metallic audio")
    opts = dict(shift=args.shift if key is None else key, steps=args.steps, temperature=args.temperature,
                sampler=args.sampler, seed=args.seed)
    wave = Path(args.wave)
    sr = cfg.data.sampling_rate
    if wave.is_dir():
        from common.filewalk import finish, run_jobs

        if args.vec or args.pit:
            raise InferenceError("--vec/--pit name one file's features; not usable with a folder --wave")
        out_root = Path(args.out or "gvc_out")
        if out_root.exists() and not out_root.is_dir():
            raise InferenceError(f"{out_root}: --out must be a folder in folder mode")
        jobs = folder_jobs(wave, out_root, not args.no_png, {"convert": opts, "png": not args.no_png})
        if not jobs:
            raise InferenceError(f"{wave}: no audio files in this folder")
        # worker processes load their own models; in this process the converter above is used
        summary = run_jobs(jobs, _convert_job, args.workers, "convert", _folder_converter, (args, spk),
                           skip_done=not args.overwrite, ready=(converter, spk))
        print(f"converted {summary.processed} of {len(jobs)} songs into {out_root}"
              + (f" ({summary.skipped} already there; --overwrite converts them again)" if summary.skipped else ""))
        return finish(summary, "convert")
    out = Path(args.out or DEFAULT_OUT)
    if out.is_dir():
        raise InferenceError(f"{out}: --out names a folder; give the output wav's path")
    conv = converter.convert(str(wave), spk, args.vec, args.pit, **opts)
    pitch_wav = converter.pitch_wav(conv.f0, args.seed)
    log_rss("pitch_wav")
    write_outputs(conv, out, sr, pitch_wav, not args.no_png)
    label = "Griffin-Lim PREVIEW" if conv.vocoder == "griffinlim" else conv.vocoder
    print(f"{out}: {len(conv.wav) / sr:.2f} s at {sr} Hz ({label})")
    return 0


def main(argv=None) -> int:
    tune_allocator()
    drop_primitive_cache()  # bounded memory for long songs (bench/bench_cli_memory.py measures it)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (AudioError, InferenceError, FeatureError, CheckpointError, ConfigError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
