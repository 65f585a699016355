"""The whole system in one command, on a fresh machine: sing a corpus, preprocess, train, convert, evaluate.

    python gvc_demo.py                   # 10-12 minutes on 2 CPU cores
    python gvc_demo.py --train_minutes 2 --out demo_out

1. festival sings our melodies with three voices (kal, ked, slt) into ``<out>/data_raw`` (a parallel corpus);
2. the numbered ``prepare/`` commands build ``<out>/data_gvc`` and ``<out>/files``;
3. ``gvc_trainer.py -c configs/tiny.yaml`` trains a small model on the CPU for ``--train_minutes``;
4. ``gvc_export.py``, then ``gvc_inference.py`` converts one of kal's songs to ked's voice;
5. ``gvc_eval.py`` measures it against the source (F0) and ked's own recording of the same song (MCD).

Official pretrained files are used when present; otherwise the offline alternative (resemblyzer speaker encoder,
Griffin-Lim vocoder) or, for HuBERT, a randomly initialised model, and the output says which. A tiny model trained
for minutes on random content features will not sound like ked: the demo shows the pipeline working end to end,
with numbers, not a usable voice.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common.runtime import tune_allocator

REPO = Path(__file__).resolve().parent
FESTIVAL_APT = "apt-get install -y festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
SOURCE = ("kal", "waltz")  # converted song
TARGET = "ked"  # target singer; ked sings the same song, the MCD reference


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
        "griffinlim", "Griffin-Lim PREVIEW (bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth missing)")
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

    # train for a time budget: one short probe run tells the step time
    trainer = [py, REPO / "gvc_trainer.py", "-c", REPO / "configs" / "tiny.yaml", "-c",
               REPO / "configs" / "demo.yaml"] + (["--device", args.device] if args.device else [])
    if (out / "logs").is_dir():  # a fresh run refuses a log folder holding another run's checkpoints
        say(f"removing the previous demo run's training logs ({out / 'logs'})")
        shutil.rmtree(out / "logs")
    t0 = time.perf_counter()
    run(trainer + ["--max-steps", "10"], out, "train (10-step probe)")
    per_step = (time.perf_counter() - t0) / 10
    steps = max(10, int(args.train_minutes * 60 / per_step))
    run(trainer + ["-p", latest_checkpoint(out), "--max-steps", str(steps)], out, f"train ({steps} more steps)")
    ckpt = latest_checkpoint(out)
    run([py, REPO / "gvc_export.py", "--checkpoint_path", ckpt, "--out", "gvc.pth"], out, "export")

    singer, song = SOURCE
    wave = f"{d}/waves-16k/{singer}/{song}.wav"
    converted = out / f"{song}_{singer}_as_{TARGET}.wav"
    run([py, REPO / "gvc_inference.py", "--model", "gvc.pth", "--spk", f"{d}/singer/{TARGET}.spk.npy", "--wave", wave,
         "--out", converted, "--vocoder", choice["vocoder"][0], "--seed", "1", "--hubert_model", choice["hubert"][0],
         *vocoder_args],
        out, "convert")
    ev = run([py, REPO / "gvc_eval.py", "--converted", converted, "--source", wave, "--target_spk",
              f"{d}/singer/{TARGET}.spk.npy", "--source_spk", f"{d}/singer/{singer}.spk.npy", "--reference",
              f"{d}/waves-16k/{TARGET}/{song}.wav", "--backend", choice["speaker"][0], *speaker_args,
              "--json", "eval.json"],
             out, "evaluate")
    print(ev.stdout, end="")
    metrics = json.loads((out / "eval.json").read_text())["mean"]
    say(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")
    from gvc_inference import companion_paths

    beside = [f"{what}: {path}" for what, path in zip(("F0 check", "mel"), companion_paths(converted))
              if path.is_file()]  # only files the conversion wrote
    say(f"converted song:   {converted}" + (f"  ({', '.join(beside)})" if beside else ""))
    shown = {k: (round(v, 3) if v is not None else None) for k, v in metrics.items()}
    say(f"metrics:          {out / 'eval.json'}  {json.dumps(shown)}")
    say(f"dataset check:    {out / 'check.json'}, F0 histograms in {out / 'data_gvc' / 'check'}")
    say(f"training logs:    tensorboard --logdir {out / 'logs'}")
    for stage, (_, label) in choice.items():
        say(f"{stage} used: {label}")
    return 0


def latest_checkpoint(out: Path) -> Path:
    ckpts = sorted((out / "logs").rglob("grad_svc_*.pt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise SystemExit(f"[demo] no checkpoint under {out / 'logs'}")
    return ckpts[-1]


if __name__ == "__main__":
    sys.exit(main())
