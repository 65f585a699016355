"""gvc_trainer.py on the tiny config: over-fitting, exact resume, guards, checkpoints, fine-tuning, torchrun."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from svc_features import load_script, write_feature_set

from common.config import REPO_ROOT, load_config
from grad.model import GradSVC
from training.checkpoints import checkpoint_order, list_checkpoints
from training.state import apply_freeze

tr = load_script("gvc_trainer")
TINY = str(REPO_ROOT / "configs" / "tiny.yaml")
# smaller windows than tiny.yaml so each step takes about a second on 2 shared CPU cores
FAST = ["data.max_frames=64", "train.segment_frames=32", "train.synth_steps=2", "train.test_size=1"]


def args_for(feat: tuple[Path, Path], log_dir: Path, *extra: str) -> list[str]:
    train, valid = feat
    return ["-c", TINY, "--device", "cpu", f"train.train_files={train}", f"train.valid_files={valid}",
            f"train.log_dir={log_dir}", *FAST, *extra]


def scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[int, float] = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def feat(tmp_path_factory):
    return write_feature_set(tmp_path_factory.mktemp("feat"))


@pytest.fixture(scope="module")
def straight(feat, tmp_path_factory):
    """6 uninterrupted steps (2 epochs of 3 batches; the decoder loss starts in epoch 2), keeping 1 checkpoint."""
    log_dir = tmp_path_factory.mktemp("straight")
    assert tr.main(args_for(feat, log_dir, "train.keep_checkpoints=1", "--max-steps", "6")) == 0
    return log_dir


def test_overfit_one_batch(feat, tmp_path):
    cfg = load_config(TINY, overrides=[f"train.train_files={feat[0]}", f"train.valid_files={feat[1]}",
                                       f"train.log_dir={tmp_path}", "train.fast_epochs=0",
                                       "train.learning_rate=1e-3", *FAST])
    state = tr.build_state(cfg, tr.DistEnv(), torch.device("cpu"))
    batch = next(iter(tr.batches(state)))
    history = [tr.train_step(state, batch) for _ in range(10)]
    state.writer.close()
    first, last = history[0], history[-1]
    assert set(first) >= {"prior", "diff", "mel", "spk", "total", "grad_norm_encoder", "grad_norm_decoder"}
    assert last["prior"] < 0.6 * first["prior"]
    assert last["diff"] < first["diff"] and last["mel"] < first["mel"]
    assert last["total"] < 0.8 * first["total"]
    assert all(b["total"] < a["total"] for a, b in zip(history[:-1], history[1:]))


def test_straight_run_logs_checkpoints_and_rotation(straight):
    assert [p.name for p in list_checkpoints(straight)] == ["grad_svc_2.pt"]  # keep_checkpoints=1
    ckpt = load(straight / "grad_svc_2.pt")
    assert set(ckpt) == {"model", "optim", "epoch", "steps", "config", "version", "scaler", "rng", "data_state"}
    assert ckpt["epoch"] == 2 and ckpt["steps"] == 6 and ckpt["version"] == "v3"
    assert ckpt["data_state"]["epoch"] == 3 and ckpt["data_state"]["batch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    diff = scalars(straight, "loss/diff")
    assert sorted(diff) == [1, 2, 3, 4, 5, 6]
    assert all(diff[s] == 0 for s in (1, 2, 3)) and all(diff[s] > 0 for s in (4, 5, 6))  # fast_epochs = 1
    assert set(scalars(straight, "grad_norm/encoder")) == set(diff)
    assert scalars(straight, "lr")[6] == pytest.approx(2e-4)
    assert sorted(scalars(straight, "valid/total")) == [3, 6]
    assert "epoch 2 validation" in (straight / "train.log").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(straight.glob("events.out.tfevents.*"))))
    acc.Reload()
    assert {"image_0/ground_truth", "image_0/generated_enc", "image_0/generated_dec"} <= set(acc.Tags()["images"])


def test_resume_mid_epoch_equals_uninterrupted(feat, straight, tmp_path):
    assert tr.main(args_for(feat, tmp_path, "--max-steps", "2")) == 0
    partial = tmp_path / "grad_svc_1_step2.pt"
    assert load(partial)["data_state"] == {"epoch": 1, "batch": 2, "seed": 37, "world_size": 1, "batch_size": 2}
    assert tr.main(["-p", str(partial), "--device", "cpu", "train.no_such_key=1"]) == tr.EXIT_DATA
    # no -c: the config stored in the checkpoint is used (its log_dir, tiny sizes)
    assert tr.main(["-p", str(partial), "--device", "cpu", "--max-steps", "4"]) == 0
    for tag in ("loss/total", "loss/prior", "loss/diff", "loss/spk", "grad_norm/decoder"):
        assert scalars(tmp_path, tag) == scalars(straight, tag), tag
    a, b = load(straight / "grad_svc_2.pt"), load(tmp_path / "grad_svc_2.pt")
    assert a["steps"] == b["steps"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["rng"]["states"][0]["torch"], b["rng"]["states"][0]["torch"])


def test_loader_workers_feed_the_same_run(feat, straight, tmp_path):
    """Two persistent loader workers over two epochs give the in-process loader's run, loss for loss (the epoch's
    windows reach workers that never see set_epoch)."""
    assert tr.main(args_for(feat, tmp_path, "train.keep_checkpoints=1", "train.num_workers=2",
                            "--max-steps", "6")) == 0
    for tag in ("loss/total", "loss/prior", "loss/diff", "loss/mel"):
        assert scalars(tmp_path, tag) == scalars(straight, tag), tag


def test_checkpoint_order():
    names = ["grad_svc_10.pt", "grad_svc_2.pt", "grad_svc_3_step7.pt", "grad_svc_3.pt", "grad_svc_11_step33.pt",
             "other.pt", "grad_svc_x.pt"]
    ordered = sorted((p for p in map(Path, names) if checkpoint_order(p)), key=checkpoint_order)
    assert [p.name for p in ordered] == ["grad_svc_2.pt", "grad_svc_3_step7.pt", "grad_svc_3.pt", "grad_svc_10.pt",
                                         "grad_svc_11_step33.pt"]


class Patched:
    """Wrap GradSVC.compute_loss: ``action(n)`` runs at the n-th training call and may replace the losses."""

    def __init__(self, monkeypatch, action):
        self.calls = 0
        original = GradSVC.compute_loss

        def wrapper(model, *args, **kwargs):
            losses = original(model, *args, **kwargs)
            if model.training:
                self.calls += 1
                return action(self.calls, losses)
            return losses

        monkeypatch.setattr(GradSVC, "compute_loss", wrapper)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(feat, tmp_path, monkeypatch, caplog):
    def poison(n, losses):
        if n == 4:
            losses["prior"] = losses["prior"] * float("nan")
        return losses

    Patched(monkeypatch, poison)
    with caplog.at_level(logging.ERROR):
        assert tr.main(args_for(feat, tmp_path, "train.test_step=100", "--max-steps", "10")) == tr.EXIT_NONFINITE
    assert "step 4 (epoch 2): loss is not finite" in caplog.text
    assert [p.name for p in list_checkpoints(tmp_path)] == ["grad_svc_1.pt"]
    assert load(tmp_path / "grad_svc_1.pt")["steps"] == 3


def test_sigterm_saves_after_the_step(feat, tmp_path, monkeypatch):
    def terminate(n, losses):
        if n == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return losses

    Patched(monkeypatch, terminate)
    assert tr.main(args_for(feat, tmp_path, "--max-steps", "10")) == 128 + signal.SIGTERM
    ckpt = load(tmp_path / "grad_svc_1_step2.pt")
    assert ckpt["steps"] == 2 and ckpt["data_state"]["batch"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_finetune_loads_weights_and_freezes(feat, straight, tmp_path, caplog):
    source = load(straight / "grad_svc_2.pt")["model"]
    with caplog.at_level(logging.INFO):
        code = tr.main(args_for(feat, tmp_path, "--finetune", str(straight / "grad_svc_2.pt"),
                                "train.freeze=[pit_emb,spk_emb]", "train.learning_rate=5e-5", "--max-steps", "1"))
    assert code == 0
    assert "fine-tuning from" in caplog.text and "frozen: pit_emb" in caplog.text
    ckpt = load(tmp_path / "grad_svc_1_step1.pt")
    for key in ("pit_emb.weight", "spk_emb.weight", "spk_emb.bias"):
        assert torch.equal(ckpt["model"][key], source[key]), key
    changed = [k for k in source if k.startswith("encoder.") and not torch.equal(ckpt["model"][k], source[k])]
    assert changed and ckpt["optim"]["param_groups"][0]["lr"] == 5e-5
    assert ckpt["config"]["train"]["pretrain"].endswith("grad_svc_2.pt")


def test_bad_data_exits_2_listing_the_files(feat, tmp_path, caplog):
    lines = feat[0].read_text().splitlines()
    lines.append(lines[0].replace(".mel.pt", "_gone.mel.pt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR):
        code = tr.main(["-c", TINY, "--device", "cpu", f"train.train_files={bad}", f"train.valid_files={feat[1]}",
                        f"train.log_dir={tmp_path / 'logs'}"])
    assert code == tr.EXIT_DATA
    assert "_gone.mel.pt: missing" in caplog.text and "1 problem(s)" in caplog.text
    assert not list((tmp_path / "logs").glob("*.pt"))


@pytest.mark.slow
def test_torchrun_two_processes_gloo(feat, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO_ROOT / "gvc_trainer.py"), *args_for(feat, tmp_path, "--max-steps", "2")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # 6 items on 2 ranks, batch 2: one batch per rank and epoch; 2 steps = 2 epochs, checkpoints by rank 0 only
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["grad_svc_1.pt", "grad_svc_2.pt"]
    ckpt = load(tmp_path / "grad_svc_2.pt")
    assert ckpt["steps"] == 2 and ckpt["rng"]["world_size"] == 2 and len(ckpt["rng"]["states"]) == 2
    assert not torch.equal(ckpt["rng"]["states"][0]["torch"], ckpt["rng"]["states"][1]["torch"])
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_speaker_backend_of_the_features_is_recorded_and_mixing_refused(tmp_path, caplog):
    import json

    train, valid = write_feature_set(tmp_path / "feat", n_train=2, n_valid=1)
    (tmp_path / "feat" / "backend.json").write_text(json.dumps({"backend": "resemblyzer", "dim": 256}))
    log_dir = tmp_path / "logs"
    assert tr.main(args_for((train, valid), log_dir, "--max-steps", "1", "train.batch_size=2")) == 0
    ckpt = load(sorted(log_dir.glob("grad_svc_*.pt"))[-1])
    assert ckpt["config"]["data"]["speaker_backend"] == "resemblyzer"
    # a second folder of embeddings made by the other encoder: refused before training
    other = write_feature_set(tmp_path / "feat2", n_train=2, n_valid=1, seed=1)
    (tmp_path / "feat2" / "backend.json").write_text(json.dumps({"backend": "lstm", "dim": 256}))
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(train.read_text() + other[0].read_text())
    with caplog.at_level(logging.ERROR):
        code = tr.main(args_for((mixed, valid), tmp_path / "logs2", "--max-steps", "1"))
    assert code == tr.EXIT_DATA and "different encoders" in caplog.text


def test_checkpoint_of_the_other_version_is_refused(feat, straight, tmp_path, caplog):
    """V2 and V3 files have the same keys: fine-tuning or resuming a V3 (flow) checkpoint under a V2 (score) config
    must stop with a one-line error instead of training flow weights as a score model."""
    v3 = str(straight / "grad_svc_2.pt")
    to_v2 = ["grad.version=v2", "grad.decoder=score", "grad.sampler=ml"]
    with caplog.at_level(logging.ERROR):
        assert tr.main(args_for(feat, tmp_path, "--finetune", v3, *to_v2, "--max-steps", "1")) == tr.EXIT_DATA
        assert "checkpoint is version v3 but the config says v2" in caplog.text
        caplog.clear()
        assert tr.main(["-p", v3, "--device", "cpu", f"train.log_dir={tmp_path}", *to_v2]) == tr.EXIT_DATA
        assert "resume checkpoint: checkpoint is version v3 but the config says v2" in caplog.text
    assert not list(tmp_path.glob("*.pt"))


def test_rotation_keeps_the_checkpoint_just_written(straight, tmp_path):
    """Resumed from an older checkpoint, the run's new checkpoints are kept, not the abandoned run's later-named
    ones (keep_checkpoints counts the last written)."""
    import shutil

    shutil.copy(straight / "grad_svc_2.pt", tmp_path / "grad_svc_2.pt")
    shutil.copy(straight / "grad_svc_2.pt", tmp_path / "grad_svc_9.pt")  # an abandoned run went further
    assert tr.main(["-p", str(tmp_path / "grad_svc_2.pt"), "--device", "cpu", f"train.log_dir={tmp_path}",
                    "train.keep_checkpoints=1", "--max-steps", "1"]) == 0
    assert [p.name for p in list_checkpoints(tmp_path)] == ["grad_svc_3_step7.pt"]


def test_vocoder_load_leaves_the_training_random_streams(tmp_path):
    """Loading the validation vocoder (random initial weights before the file's) draws nothing from the global RNG:
    a run resumed with train.vocoder set draws what the uninterrupted one drew."""
    from golden import cached_official_checkpoint

    cfg = load_config(TINY, overrides=[f"train.vocoder={cached_official_checkpoint('nsf_bigvgan_generator')}"])
    torch.manual_seed(5)
    before = torch.get_rng_state()
    assert tr.load_vocoder(cfg, torch.device("cpu")) is not None
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("key", ["batch_size", "log_step", "test_step", "save_step", "full_epochs"])
def test_zero_intervals_are_config_errors(key):
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=f"train.{key} must be at least 1"):
        load_config(TINY, overrides=[f"train.{key}=0"])


def test_finetune_across_speaker_encoders_warns(feat, straight, tmp_path, caplog):
    """An official-layout pretrain (no config: trained on LSTM embeddings) fine-tuned on resemblyzer features says
    the speaker projection must learn the new space, and that a frozen spk_emb cannot."""
    official = tmp_path / "gvc.pretrain.pth"
    torch.save({"model": load(straight / "grad_svc_2.pt")["model"]}, official)
    with caplog.at_level(logging.WARNING):
        assert tr.main(args_for(feat, tmp_path / "logs", "--finetune", str(official), "train.freeze=[spk_emb]",
                                "data.speaker_backend=resemblyzer", "--max-steps", "1")) == 0
    assert "trained on 'lstm' speaker embeddings, these features are 'resemblyzer'" in caplog.text
    assert "drop it from train.freeze" in caplog.text


def test_finetune_config_freezes_what_the_original_froze():
    """configs/finetune.yaml freezes pit_emb, spk_emb, encoder.prenet and encoder.speaker, as the original's
    fine_tune(): 25,291,055 of the base model's 33,886,191 parameters stay trainable."""
    cfg = load_config(str(REPO_ROOT / "configs" / "finetune.yaml"))
    with torch.device("meta"):  # shapes only: no weights initialised
        model = GradSVC(cfg.grad)
    apply_freeze(model, list(cfg.train.freeze))
    assert cfg.train.learning_rate == pytest.approx(2e-5)
    assert sum(p.numel() for p in model.parameters()) == 33_886_191
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 25_291_055


def test_resume_keeps_the_checkpoints_learning_rate_unless_overridden(straight, tmp_path, caplog):
    """-p keeps the optimizer state's learning rate and the stored freeze list (the original restored the
    optimizer); an explicit key=value replaces it and is logged."""
    ckpt = load(straight / "grad_svc_2.pt")
    ckpt["optim"]["param_groups"][0]["lr"] = 5e-5  # a fine-tune's rate, the stored config says 2e-4
    ckpt["config"]["train"]["freeze"] = ["pit_emb"]
    torch.save(ckpt, tmp_path / "grad_svc_2.pt")
    run = ["-p", str(tmp_path / "grad_svc_2.pt"), "--device", "cpu", f"train.log_dir={tmp_path}", "--max-steps", "1",
           "train.keep_checkpoints=5"]
    assert tr.main(run) == 0
    out = load(tmp_path / "grad_svc_3_step7.pt")
    assert out["optim"]["param_groups"][0]["lr"] == 5e-5 and out["config"]["train"]["freeze"] == ["pit_emb"]
    assert torch.equal(out["model"]["pit_emb.weight"], ckpt["model"]["pit_emb.weight"])
    with caplog.at_level(logging.INFO):
        assert tr.main([*run, "train.learning_rate=1e-4"]) == 0
    assert load(tmp_path / "grad_svc_3_step7.pt")["optim"]["param_groups"][0]["lr"] == 1e-4
    assert "train.learning_rate = 0.0001 overrides the checkpoint's 0.0002" in caplog.text


def loss_batch(cfg, b: int = 2, t: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch in ``grad.data.collate``'s layout (zero beyond each length)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([t, t - 9])
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    return {"mel": (torch.randn(b, cfg.grad.n_mels, t, generator=g) - 5.0) * mask[:, None], "lengths": lengths,
            "vec": torch.randn(b, t, 256, generator=g) * mask[..., None],
            "pit": (150 + 100 * torch.rand(b, t, generator=g)) * mask,
            "spk": torch.nn.functional.normalize(torch.randn(b, 256, generator=g), dim=-1)}


@pytest.mark.parametrize("use_decoder", [True, False])
def test_model_forward_is_compute_loss_on_the_batch(use_decoder):
    """``GradSVC(batch)`` (what a training step and DDP call) gives compute_loss's losses, bit for bit, from the same
    random draws (training mode: unit perturbation, segment starts and decoder noise)."""
    cfg = load_config(TINY)
    torch.manual_seed(0)
    model = GradSVC(cfg.grad).train()
    batch = loss_batch(cfg)
    torch.manual_seed(7)
    direct = model.compute_loss(batch["mel"], batch["lengths"], batch["vec"], batch["pit"], batch["spk"],
                                out_size=32, use_decoder=use_decoder)
    torch.manual_seed(7)
    called = model(batch, out_size=32, use_decoder=use_decoder)
    assert list(called) == list(direct) == ["prior", "diff", "mel", "spk"]
    for key in direct:
        assert torch.equal(called[key], direct[key]), key
    assert bool(called["diff"] != 0) == use_decoder
    torch.manual_seed(7)  # (dropout draws from the global stream, the rest from the generator)
    direct = model.compute_loss(batch["mel"], batch["lengths"], batch["vec"], batch["pit"], batch["spk"],
                                out_size=32, use_decoder=use_decoder, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)
    called = model(batch, out_size=32, use_decoder=use_decoder, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(called[k], direct[k]) for k in direct)


@pytest.mark.filterwarnings("ignore:Grad strides do not match bucket view strides")  # size-1 dims: harmless
def test_ddp_wraps_the_model_itself(tmp_path):
    """One gloo process: DistributedDataParallel around GradSVC gives the plain model's losses and gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cfg = load_config(TINY)
    torch.manual_seed(0)
    model = GradSVC(cfg.grad).train()
    batch = loss_batch(cfg)
    torch.manual_seed(7)
    plain = model(batch, out_size=32)
    sum(plain.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        torch.manual_seed(7)
        wrapped = ddp(batch, out_size=32)
        sum(wrapped.values()).backward()
    finally:
        dist.destroy_process_group()
    assert all(torch.equal(wrapped[k], plain[k]) for k in plain)
    assert grads and all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if n in grads)
