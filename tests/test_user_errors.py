"""What a user meets on a fresh setup: every missing pretrained file named at once (with its flag and the offline
alternative), small datasets and repeated runs, and a full disk that says so and stops the file loop."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from svc_features import load_script, write_feature_set

import common.io as cio
from common.config import REPO_ROOT
from common.filewalk import MIN_JOBS_PER_WORKER, Job, finish, run_jobs
from common.io import DiskFullError, atomic_path, save_npy, save_torch, write_text

TINY = str(REPO_ROOT / "configs" / "tiny.yaml")
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662"  # torch.save's words
CORPUS_SONG = Path(__file__).parent / "fixtures" / "corpus" / "kal" / "scale.wav"


def _spk(tmp: Path) -> Path:
    path = tmp / "singer.spk.npy"
    np.save(path, np.full(256, 1 / 16, np.float32))
    return path


# ----------------------------------------------------------------------------------------------------------------
# item 6: missing files, all at once


def test_conversion_names_every_missing_pretrained_file_in_one_run(tmp_path, capsys):
    from gvc_inference import main

    out = tmp_path / "o.wav"
    code = main(["--model", str(tmp_path / "gvc.pth"), "--spk", str(_spk(tmp_path)), "--wave", str(CORPUS_SONG),
                 "--hubert_model", str(tmp_path / "hubert.pt"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert err[0] == "error: 3 pretrained files are missing:" and len(err) == 4, err
    model, hubert, vocoder = err[1:]
    assert model.strip().startswith(f"{tmp_path / 'gvc.pth'}: pretrained file not found") and "--model" in model
    assert hubert.strip().startswith(f"{tmp_path / 'hubert.pt'}: pretrained") and "--hubert_model" in hubert
    assert "hubert_pretrain/hubert-soft-0d54a1f4.pt" in hubert and "github.com/bshall/hubert" in hubert
    # the default vocoder path, its flag and the offline vocoders
    assert vocoder.strip().startswith("bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth: pretrained file not found")
    assert "--vocoder_model" in vocoder and "--vocoder griffinlim" in vocoder and "--vocoder world" in vocoder


def test_only_the_files_a_run_needs_are_asked_for(tmp_path, capsys):
    """Griffin-Lim needs no vocoder file, given units need no HuBERT: one line, the model's."""
    from gvc_inference import main

    vec = tmp_path / "song.vec.npy"
    np.save(vec, np.zeros((80, 256), np.float32))
    code = main(["--model", str(tmp_path / "gvc.pth"), "--spk", str(_spk(tmp_path)), "--wave", str(CORPUS_SONG),
                 "--vec", str(vec), "--vocoder", "griffinlim", "--out", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'gvc.pth'}: pretrained file not found") and "--model" in err[0]


def test_training_names_its_missing_start_and_vocoder_at_once(tmp_path, caplog):
    tr = load_script("gvc_trainer")
    with caplog.at_level(logging.ERROR):
        code = tr.main(["-c", TINY, "--device", "cpu", f"train.log_dir={tmp_path / 'logs'}",
                        "--finetune", str(tmp_path / "gvc.pretrain.pth"), f"train.vocoder={tmp_path / 'voc.pth'}"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == tr.EXIT_DATA and len(errors) == 1, errors
    lines = errors[0].splitlines()
    assert lines[0] == "2 pretrained files are missing:" and len(lines) == 3
    assert "gvc.pretrain.pth: pretrained file not found" in lines[1] and "--finetune PATH" in lines[1]
    assert "voc.pth: pretrained file not found" in lines[2] and "train.vocoder=null" in lines[2]


def test_preprocessing_names_its_own_flag_and_the_offline_backend(tmp_path, capsys):
    from prepare import preprocess_hubert, preprocess_speaker

    waves = tmp_path / "waves-16k" / "kal"
    waves.mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        preprocess_hubert.main(["-w", str(waves.parent), "-v", str(tmp_path / "hubert"), "--model",
                                str(tmp_path / "no_hubert.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "no_hubert.pt: pretrained file not found" in err[0]
    assert "give its path with --model" in err[0]
    code = preprocess_speaker.main([str(waves.parent), str(tmp_path / "speaker"), "--backend", "lstm",
                                    "--checkpoint", str(tmp_path / "no_lstm.pth.tar")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no_lstm.pth.tar: pretrained file not found" in err[0]
    assert "give its path with --checkpoint" in err[0] and "offline alternative: --backend resemblyzer" in err[0]


def test_evaluation_names_the_speaker_checkpoint_flag_and_the_offline_backend(tmp_path, capsys):
    import gvc_eval

    code = gvc_eval.main(["--converted", str(CORPUS_SONG), "--source", str(CORPUS_SONG), "--backend", "lstm",
                          "--checkpoint", str(tmp_path / "no_lstm.pth.tar")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no_lstm.pth.tar: pretrained file not found" in err[0], err
    assert "give its path with --checkpoint" in err[0] and "offline alternative: --backend resemblyzer" in err[0]


def test_pitch_wav_without_the_vocoder_file_is_the_nsf_source():
    """The F0 check wav needs no NSF-BigVGAN file: the same numbers as the generator's own pitch2wav for a seed."""
    from bigvgan.model import Generator
    from common.config import load_config
    from conversion import Converter

    cfg = load_config(TINY)
    conv = Converter.__new__(Converter)  # only what pitch_wav uses: no model files
    conv.device, conv.cfg, conv.vocoder_kind, conv._vocoder = torch.device("cpu"), cfg, "griffinlim", None
    f0 = np.concatenate([np.zeros(20), np.full(60, 220.0), np.zeros(10), np.linspace(200, 400, 40)])
    wav = conv.pitch_wav(f0, seed=3)
    gen = torch.Generator().manual_seed(3)
    ref = Generator().pitch2wav(torch.from_numpy(f0).float()[None], generator=gen)[0].numpy()
    assert wav.dtype == np.int16 and wav.shape == (320 * len(f0),) and np.array_equal(wav, ref)
    # voiced frames carry the tone: its strongest bin is 220 Hz
    voiced = wav[320 * 20: 320 * 80].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(voiced))
    assert abs(np.argmax(spectrum) * 32000 / len(voiced) - 220) < 2


# ----------------------------------------------------------------------------------------------------------------
# item 7: small datasets and repeated runs


def _lines(counts: dict[str, int]) -> list[str]:
    return [f"d/mel/{s}/{i}.mel.pt|d/hubert/{s}/{i}.vec.npy|d/pitch/{s}/{i}.pit.npy|d/speaker/{s}/{i}.spk.npy"
            for s, n in counts.items() for i in range(n)]


@pytest.mark.parametrize("counts, n_valid, n_train", [
    ({"alto": 20}, 4, 16),  # the original held out 10 of 20
    ({"alto": 5}, 1, 4),  # the original kept 1 for training
    ({"alto": 4}, 0, 4),
    ({"alto": 60, "bass": 50}, 10, 100),  # a big set: the original's 10
])
def test_validation_takes_at_most_a_fifth_of_a_singers_clips(counts, n_valid, n_train):
    from prepare.preprocess_train import singer_of, split_valid

    lines = _lines(counts)
    valid, train, warning = split_valid(lines, 10, 0.2)
    assert (len(valid), len(train)) == (n_valid, n_train) and sorted(valid + train) == sorted(lines)
    for singer, n in counts.items():
        assert sum(singer_of(x) == singer for x in valid) <= 0.2 * n
    assert (warning is None) == (n_valid == 10)
    if warning:
        assert f"{n_valid} validation items instead of 10" in warning and "20%" in warning


def test_validation_cap_holds_per_singer():
    from prepare.preprocess_train import singer_of, split_valid

    valid, _, warning = split_valid(_lines({"alto": 100, "bass": 5}), 10, 0.2)
    assert len(valid) == 10 and sum(singer_of(x) == "bass" for x in valid) <= 1 and warning is None


def test_index_warns_about_the_smaller_validation_set(tmp_path, capsys):
    from prepare.preprocess_train import main

    data = tmp_path / "data_gvc"
    for i in range(20):
        for sub, suffix in (("waves-32k", ".wav"), ("mel", ".mel.pt"), ("hubert", ".vec.npy"),
                            ("pitch", ".pit.npy"), ("speaker", ".spk.npy")):
            (data / sub / "alto").mkdir(parents=True, exist_ok=True)
            (data / sub / "alto" / f"{i:03d}{suffix}").write_bytes(b"x")
    assert main(["--data", str(data), "--out", str(tmp_path / "files")]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 validation items instead of 10" in err and "alto 4 of 20" in err
    assert (tmp_path / "files" / "valid.txt").read_text().count("\n") == 4
    assert (tmp_path / "files" / "train.txt").read_text().count("\n") == 16


def test_an_empty_validation_list_trains_without_validation(tmp_path, caplog):
    """A set too small to hold a clip out (4 clips a singer) gets an empty valid.txt: the check and the trainer
    accept it with a warning; an empty training list stays a problem."""
    from prepare.preprocess_zzz import check_filelists

    tr = load_script("gvc_trainer")
    train, valid = write_feature_set(tmp_path / "feat")
    valid.write_text("")
    problems, stats = check_filelists([train, valid], 100, 256, allow_empty=(valid,))
    assert problems == [] and sum(s["clips"] for s in stats.values()) == 6
    assert check_filelists([valid, train], 100, 256, allow_empty=(train,))[0] == [f"{valid}: empty filelist"]
    with caplog.at_level(logging.WARNING):
        assert tr.main(["-c", TINY, "--device", "cpu", f"train.train_files={train}", f"train.valid_files={valid}",
                        f"train.log_dir={tmp_path / 'logs'}", "data.max_frames=64", "train.segment_frames=32",
                        "--max-steps", "1"]) == 0
    assert any("no usable validation items" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "logs").glob("grad_svc_*.pt"))


def test_fresh_training_run_refuses_a_folder_with_another_runs_checkpoints(tmp_path, caplog):
    tr = load_script("gvc_trainer")
    log_dir = tmp_path / "logs" / "grad_svc"
    log_dir.mkdir(parents=True)
    other = log_dir / "grad_svc_1.pt"
    other.write_bytes(b"another run's weights")
    with caplog.at_level(logging.ERROR):
        code = tr.main(["-c", TINY, "--device", "cpu", f"train.log_dir={log_dir}", "--max-steps", "1"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == tr.EXIT_DATA and len(errors) == 1 and "\n" not in errors[0]
    assert "another run's checkpoints" in errors[0] and "-n NAME" in errors[0] and f"-p {other}" in errors[0]
    assert other.read_bytes() == b"another run's weights"
    assert sorted(p.name for p in log_dir.iterdir()) == ["grad_svc_1.pt"]  # no train.log, no TensorBoard events


def test_inference_takes_c_for_config(tmp_path, capsys):
    from gvc_inference import build_parser, main

    assert build_parser().parse_args(["-c", "configs/v2.yaml", "--model", "m", "--spk", "s", "--wave", "w"]).config \
        == "configs/v2.yaml"
    model = tmp_path / "gvc.pth"
    model.write_bytes(b"x")
    code = main(["-c", str(tmp_path / "nope.yaml"), "--model", str(model), "--spk", str(_spk(tmp_path)), "--wave",
                 str(CORPUS_SONG), "--vocoder", "griffinlim", "--vec", str(model), "--out", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.yaml" in err[0], err


# ----------------------------------------------------------------------------------------------------------------
# item 8: a full disk says so


def _full_disk(monkeypatch) -> None:
    """The file system reports nothing left (what statvfs says once a disk is full)."""
    monkeypatch.setattr(cio, "free_bytes", lambda folder: 0)


def test_enospc_is_named_with_the_path_and_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "a.vec.npy"
    with pytest.raises(DiskFullError) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"no space left on device ({target})" and info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError) and list(target.parent.iterdir()) == []


def test_torch_and_numpy_full_disk_failures_become_the_clear_message(tmp_path, monkeypatch):
    def torch_full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK")
        raise RuntimeError(TORCH_FULL_DISK)

    def numpy_full(f, arr, *a, **k):
        raise OSError("20000 requested and 2032 written")  # np.save's words, no errno

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(np, "save", numpy_full)
    # with room left the writers' own errors pass through unchanged (not every failure is a full disk)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_torch(tmp_path / "x.mel.pt", torch.zeros(3))
    _full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match=r"^no space left on device \(.*ckpt\.pt\)$"):
        save_torch(tmp_path / "ckpt.pt", {"w": torch.zeros(3)}, durable=True)
    with pytest.raises(DiskFullError, match=r"x\.vec\.npy"):
        save_npy(tmp_path / "x.vec.npy", np.zeros(3))
    # a writer's error that is not about writing (a wrong argument) is not a full disk
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "y.txt"):
            raise ValueError("bad value")
    assert not [p for p in tmp_path.iterdir()]


def test_converted_song_on_a_full_disk(tmp_path, monkeypatch):
    import soundfile

    from common.audio import write_wav

    def sf_full(*a, **k):
        raise soundfile.LibsndfileError(2)  # what libsndfile raises on a full disk

    monkeypatch.setattr(soundfile, "write", sf_full)
    _full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match=r"song\.wav"):
        write_wav(tmp_path / "song.wav", np.zeros(320, np.float32), 32000)


def _fill_after_ten(job: Job, state) -> None:
    if int(job.src.name) >= 10:
        if state == "slow":  # a real file takes a while: the parent hears of the full disk before all have failed
            time.sleep(0.3)
        raise DiskFullError(job.outputs[0])
    write_text(job.outputs[0], "ok")


def _slow() -> str:
    return "slow"


def test_file_loop_stops_at_a_full_disk(tmp_path, capsys):
    jobs = [Job(tmp_path / f"{i}", [tmp_path / "out" / f"{i}.txt"]) for i in range(40)]
    summary = run_jobs(jobs, _fill_after_ten, workers=1)
    assert summary.processed == 10 and len(summary.failed) == 1 and summary.not_started == 29
    assert summary.disk_full == f"no space left on device ({tmp_path / 'out' / '10.txt'})"
    assert finish(summary, "hubert units") == 1
    err = capsys.readouterr().err
    assert "stopped: no space left on device" in err and "29 files not started" in err
    assert err.count("FAILED") == 1


def test_parallel_file_loop_stops_at_a_full_disk(tmp_path):
    n = 2 * MIN_JOBS_PER_WORKER + 3  # two worker processes
    jobs = [Job(tmp_path / f"{i}", [tmp_path / "out" / f"{i}.txt"]) for i in range(n)]
    summary = run_jobs(jobs, _fill_after_ten, workers=2, init=_slow)
    assert summary.disk_full is not None and summary.processed == 10
    # the files in progress or already queued to a worker may still fail (about 6); the rest never start
    assert 1 <= len(summary.failed) <= 20 and summary.not_started == n - 10 - len(summary.failed)


def test_checkpoint_writers_on_a_full_disk(tmp_path, monkeypatch, caplog):
    """The trainer and the export stop with the one line (exit 2) instead of torch's words."""
    tr = load_script("gvc_trainer")
    export = load_script("gvc_export")
    train, valid = write_feature_set(tmp_path / "feat")
    argv = ["-c", TINY, "--device", "cpu", f"train.train_files={train}", f"train.valid_files={valid}",
            f"train.log_dir={tmp_path / 'logs'}", "data.max_frames=64", "train.segment_frames=32",
            "--max-steps", "1"]
    assert tr.main(argv) == 0
    ckpt = next((tmp_path / "logs").glob("grad_svc_*.pt"))

    def torch_full(obj, f, *a, **k):
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(torch, "save", torch_full)
    _full_disk(monkeypatch)
    with caplog.at_level(logging.ERROR):
        assert tr.main(["-p", str(ckpt), "--device", "cpu", "--max-steps", "1"]) == tr.EXIT_DATA
        assert export.main(["-p", str(ckpt), "--out", str(tmp_path / "gvc.pth")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"no space left on device ({tmp_path / 'logs' / 'grad_svc_1_step2.pt'})",
                      f"no space left on device ({tmp_path / 'gvc.pth'})"], errors
    assert not (tmp_path / "gvc.pth").exists() and not any(p.name.startswith(".") for p in
                                                            (tmp_path / "logs").iterdir())


def test_a_real_full_file_system_if_one_is_mounted():
    """Opt-in: with GVC_FULL_DISK naming a small mounted file system (``mount -t tmpfs -o size=3m tmpfs DIR``, as
    root), each writer is made to fail for real and must say so."""
    from common.audio import write_wav

    root = os.environ.get("GVC_FULL_DISK")
    if not root:
        pytest.skip("set GVC_FULL_DISK to a small (few MB) file system to check real full-disk writes")
    root = Path(root)
    filler = root / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    writers = {"pt": lambda p: save_torch(p, {"w": torch.zeros(100000)}, durable=True),
               "npy": lambda p: save_npy(p, np.zeros(100000)),
               "wav": lambda p: write_wav(p, np.zeros(100000, np.float32), 32000),
               "txt": lambda p: write_text(p, "x" * 100000)}
    try:
        for suffix, write in writers.items():
            target = root / "sub" / f"x.{suffix}"
            with pytest.raises(DiskFullError) as info:
                write(target)
            assert str(info.value) == f"no space left on device ({target})"
            assert not target.exists() and not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    finally:
        filler.unlink()
