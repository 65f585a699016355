"""The whole system in one command, on a fresh machine: sing a corpus, preprocess, train, convert, evaluate.

    python gvc_demo.py                   # about 6 minutes on 2 CPU cores (5 of them training)
    python gvc_demo.py --train_minutes 2 --out demo_out

1. festival sings our melodies with three voices (kal, ked, slt) into ``<out>/data_raw`` (a parallel corpus);
2. the numbered ``prepare/`` commands build ``<out>/data_gvc`` and ``<out>/files``;
3. ``gvc_trainer.py -c configs/tiny.yaml -c configs/demo.yaml`` trains a small model on the CPU for
   ``--train_minutes`` of wall time, printing its losses as it goes (a rerun continues that training);
4. ``gvc_export.py``, then ``gvc_inference.py`` converts one of kal's songs to ked's voice, in ked's key;
5. ``gvc_eval.py`` measures it against the source (F0), ked's singer embedding and ked's own recording of the same
   song (MCD), beside two references: kal's recording itself (the identity floor) and ked's (the oracle).

Minutes of training teach the encoder, not the flow decoder (that takes hours), so the demo trains the encoder phase
of the original's schedule (``fast_epochs``) and converts with ``--steps 0``: the encoder's prior mel, vocoded. Official
pretrained files are used when present; otherwise the offline alternative (resemblyzer speaker encoder, the WORLD
vocoder, which follows the F0 exactly) or, for HuBERT, a randomly initialised model, and the output says which. The
result sings the source melody in a rough, synthetic voice: the demo shows the pipeline working end to end, with
numbers, not a usable voice.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common.runtime import tune_allocator

REPO = Path(__file__).resolve().parent
FESTIVAL_APT = "apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
SOURCE = ("kal", "waltz")  # converted song
TARGET = "ked"  # target singer; ked sings the same song, the MCD reference
TRAIN_EPOCH = re.compile(r" INFO epoch (\d+): (.*)")  # the trainer's epoch summary
TRAIN_STOP = re.compile(r"(?:stopped after|at step) (\d+)")  # its last line: the steps it trained


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run(cmd: list, cwd: Path, what: str) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    say(f"{what}: {time.perf_counter() - t0:.1f} s")
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-2000:] + res.stderr[-4000:])
        raise SystemExit(f"[demo] step failed ({what}), exit status {res.returncode}: {' '.join(map(str, cmd))}")
    return res


def make_corpus(raw: Path) -> None:
    if shutil.which("text2wave") is None:
        raise SystemExit(f"[demo] festival is needed to sing the demo corpus; install it with:\n  sudo {FESTIVAL_APT}")
    sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from make_corpus import make_corpus as sing

    sing(raw)


def pretrained(out: Path) -> dict:
    """Which pretrained file or fallback each stage uses (and make the random HuBERT when needed)."""
    choice = {}
    hubert = REPO / "hubert_pretrain" / "hubert-soft-0d54a1f4.pt"
    if hubert.is_file():
        choice["hubert"] = (str(hubert), "official hubert-soft")
    else:
        import torch

        from common.io import save_torch
        from hubert.model import HubertSoft

        torch.manual_seed(0)
        path = out / "pretrained" / "hubert_random_init.pt"
        if not path.is_file():
            save_torch(path, HubertSoft().state_dict())
        choice["hubert"] = (str(path), "RANDOM INITIALISATION (hubert_pretrain/hubert-soft-0d54a1f4.pt missing)")
    lstm = REPO / "speaker_pretrain" / "best_model.pth.tar"
    choice["speaker"] = ("lstm", "official LSTM speaker encoder") if lstm.is_file() else (
        "resemblyzer", "resemblyzer (offline alternative; speaker_pretrain/best_model.pth.tar missing)")
    vocoder = REPO / "bigvgan_pretrain" / "nsf_bigvgan_pretrain_32K.pth"
    choice["vocoder"] = ("bigvgan", "official NSF-BigVGAN") if vocoder.is_file() else (
        "world", "WORLD (offline, follows the F0 exactly; bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth missing)")
    return choice


def file_args(choice: dict) -> tuple[list[str], list[str]]:
    """The official files' absolute paths for the commands, which run inside the work folder (where the default
    relative paths point nowhere): (speaker encoder args, vocoder args)."""
    speaker = ["--checkpoint", str(REPO / "speaker_pretrain" / "best_model.pth.tar")] if (
        choice["speaker"][0] == "lstm") else []
    vocoder = ["--vocoder_model", str(REPO / "bigvgan_pretrain" / "nsf_bigvgan_pretrain_32K.pth")] if (
        choice["vocoder"][0] == "bigvgan") else []
    return speaker, vocoder


def main(argv=None) -> int:
    tune_allocator()
    # idle OpenMP threads of the commands sleep instead of spinning: on a shared machine spinning threads of two
    # processes slowed each other down many times over (the trainer: 0.4 -> 10 s a step)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ap = argparse.ArgumentParser(description="Grad-SVC end to end on a festival-sung corpus.")
    ap.add_argument("--out", default="demo_out", help="work folder (default demo_out)")
    ap.add_argument("--train_minutes", type=float, default=5.0, help="training time budget on the CPU")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    py = sys.executable

    raw = out / "data_raw"
    if not any(raw.glob("*/*.wav")):
        say("singing the corpus with festival ...")
        make_corpus(raw)
    choice = pretrained(out)
    for stage, (_, label) in choice.items():
        say(f"{stage}: {label}")

    prep = REPO / "prepare"
    d = "./data_gvc"
    run([py, prep / "preprocess_a.py", "-w", "./data_raw", "-o", f"{d}/waves-16k", "-s", "16000", "-t", "0"], out,
        "1. resample 16 kHz")
    run([py, prep / "preprocess_a.py", "-w", "./data_raw", "-o", f"{d}/waves-32k", "-s", "32000", "-t", "0"], out,
        "1. resample 32 kHz")
    run([py, prep / "preprocess_f0.py", "-w", f"{d}/waves-16k/", "-p", f"{d}/pitch", "-t", "0"], out, "2. pitch")
    run([py, prep / "preprocess_spec.py", "-w", f"{d}/waves-32k/", "-s", f"{d}/mel", "-t", "0"], out, "3. mel")
    run([py, prep / "preprocess_hubert.py", "-w", f"{d}/waves-16k/", "-v", f"{d}/hubert", "--model",
         choice["hubert"][0]], out, "4. hubert")
    speaker_args, vocoder_args = file_args(choice)
    run([py, prep / "preprocess_speaker.py", f"{d}/waves-16k/", f"{d}/speaker", "--backend", choice["speaker"][0],
         *speaker_args],
        out, "5. speaker")
    run([py, prep / "preprocess_speaker_ave.py", f"{d}/speaker/", f"{d}/singer"], out, "6. singer mean")
    run([py, prep / "preprocess_train.py", "--valid", "2", "--valid_share", "0.25"], out, "8. training index")
    check = run([py, prep / "preprocess_zzz.py", "--json", "check.json"], out, "9. check")
    print(check.stdout, end="")

    # train for a time budget (the trainer saves and stops on SIGTERM as on Ctrl-C); a rerun continues training
    trainer = [py, REPO / "gvc_trainer.py", "-c", REPO / "configs" / "tiny.yaml", "-c",
               REPO / "configs" / "demo.yaml"] + (["--device", args.device] if args.device else [])
    if list_checkpoints(out):  # a fresh run would refuse a log folder holding another run's checkpoints
        say(f"continuing the training in {out / 'logs'} (delete that folder to start over)")
        trainer += ["-p", latest_checkpoint(out)]
    train_for(trainer, out, args.train_minutes)
    ckpt = latest_checkpoint(out)
    run([py, REPO / "gvc_export.py", "--checkpoint_path", ckpt, "--out", "gvc.pth"], out, "export")

    singer, song = SOURCE
    wave = f"{d}/waves-16k/{singer}/{song}.wav"
    reference = f"{d}/waves-16k/{TARGET}/{song}.wav"
    shift = key_shift(singer, TARGET)
    converted = out / f"{song}_{singer}_as_{TARGET}.wav"
    # --steps 0: the encoder's prior mel; a flow decoder trained for minutes gives noise (it needs hours)
    run([py, REPO / "gvc_inference.py", "--model", "gvc.pth", "--spk", f"{d}/singer/{TARGET}.spk.npy", "--wave", wave,
         "--out", converted, "--vocoder", choice["vocoder"][0], "--seed", "1", "--hubert_model", choice["hubert"][0],
         "--shift", str(shift), "--steps", "0", *vocoder_args],
        out, f"convert (into {TARGET}'s key: --shift {shift}; --steps 0: the encoder's mel, no decoder)")
    # the conversion and two references on the parallel corpus, evaluated alike: the source recording itself (the
    # identity floor: no conversion at all) and the target singer's own recording of the song (the oracle)
    compare = out / "eval"
    compare.mkdir(exist_ok=True)
    named = {"conversion": converted, "identity floor": out / wave, "oracle": out / reference}
    for name, path in named.items():
        shutil.copyfile(path, compare / f"{name.replace(' ', '_')}.wav")
    run([py, REPO / "gvc_eval.py", "--converted", compare, "--source", wave, "--shift", str(shift), "--target_spk",
         f"{d}/singer/{TARGET}.spk.npy", "--source_spk", f"{d}/singer/{singer}.spk.npy", "--reference", reference,
         "--backend", choice["speaker"][0], *speaker_args, "--json", "eval.json"],
        out, "evaluate")
    rows = {Path(r["converted"]).stem.replace("_", " "): r for r in json.loads((out / "eval.json").read_text())["rows"]}
    print_metrics([rows[name] for name in named], list(named), singer, song)
    level = wav_level(converted)
    say(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")
    from conversion import companion_paths

    beside = [f"{what}: {path}" for what, path in zip(("F0 check", "mel"), companion_paths(converted))
              if path.is_file()]  # only files the conversion wrote
    say(f"converted song:   {converted}  ({level}" + (f"; {', '.join(beside)}" if beside else "") + ")")
    say(f"metrics:          {out / 'eval.json'}")
    say(f"dataset check:    {out / 'check.json'}, F0 histograms in {out / 'data_gvc' / 'check'}")
    say(f"training logs:    tensorboard --logdir {out / 'logs'}")
    for stage, (_, label) in choice.items():
        say(f"{stage} used: {label}")
    return 0


def key_shift(singer: str, target: str) -> int:
    """Semitones from the source singer's key to the target's (the corpus transposes each song per singer)."""
    sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from make_corpus import SINGERS

    return SINGERS[target][1] - SINGERS[singer][1]


def train_for(cmd: list, cwd: Path, minutes: float, every: float = 20.0) -> None:
    """Run the trainer for ``minutes`` of wall time, then stop it as Ctrl-C would (it saves a checkpoint), printing
    the latest epoch's losses every ``every`` seconds."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)  # text mode reads tqdm's carriage returns as line ends
    timer = threading.Timer(minutes * 60, proc.send_signal, args=(signal.SIGTERM,))
    timer.start()
    say(f"training for {minutes:g} min (losses fall as it learns; prior: the encoder's mel against the real one)")
    tail: collections.deque = collections.deque(maxlen=40)
    latest, shown, steps = "", t0, "?"
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if not any(tag in line for tag in (" INFO ", " WARNING ", " ERROR ")):
                continue  # progress bars
            tail.append(line)
            if m := TRAIN_EPOCH.search(line):
                latest = f"epoch {m.group(1)}: {m.group(2)}".replace(" | diff 0.0000", "")  # decoder loss off
            elif m := TRAIN_STOP.search(line):
                steps = m.group(1)
            elif " INFO " not in line and "signal" not in line:  # not our own stop
                say(f"train: {line.split(' ', 1)[-1]}")
            if latest and time.perf_counter() - shown >= every:
                shown = time.perf_counter()
                say(f"train {clock(shown - t0)} / {clock(minutes * 60)}  {latest}")
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
    if code not in (0, 128 + signal.SIGTERM):
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"[demo] step failed (train), exit status {code}: {' '.join(map(str, cmd))}")
    say(f"train: {clock(time.perf_counter() - t0)}, {steps} steps; last {latest}")


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def wav_level(path: Path) -> str:
    import numpy as np
    import soundfile as sf

    x = np.abs(sf.read(path, dtype="float32")[0])
    return (f"peak {x.max():.2f}, RMS {np.sqrt(np.mean(x ** 2)):.3f}, {100 * np.mean(x > 0.95):.2f} % of samples "
            f"above 0.95")


def print_metrics(rows: list[dict], names: list[str], singer: str, song: str) -> None:
    """The conversion's metrics beside the two references', each with its unit, direction and frames."""
    from gvc_eval import metric_lines

    say(f"metrics of {singer}'s {song} converted to {TARGET}, beside two references on the parallel corpus:")
    say(f"  identity floor = {singer}'s recording itself (no conversion); oracle = {TARGET}'s own recording (its "
        "MCD to itself is 0)")
    for line in metric_lines(rows, names):
        print("  " + line)


def list_checkpoints(out: Path) -> list[Path]:
    return sorted((out / "logs").rglob("grad_svc_*.pt"), key=lambda p: p.stat().st_mtime)


def latest_checkpoint(out: Path) -> Path:
    ckpts = list_checkpoints(out)
    if not ckpts:
        raise SystemExit(f"[demo] no checkpoint under {out / 'logs'}")
    return ckpts[-1]


if __name__ == "__main__":
    sys.exit(main())
