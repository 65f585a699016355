"""Golden parity of the acoustic model (grad/) with the original Grad-SVC code (V2 and V3 branches).

Weights: the fill recipe of each golden file, written like the official ``gvc.pretrain.pth`` and loaded through
``grad.checkpoint.load_gvc_model``. Sampling noise: the golden tensors, injected in the original's draw order.
Every input comes from the vector file: arrays, and the call's parameters (steps, temperature, stub formulas) from
its ``meta_json``, so another vector set in the same format is tested with its own values.
"""

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import REPO_ROOT, load_config
from golden import (
    assert_close,
    atol,
    call_arg,
    call_number,
    fill_recipe,
    golden_cases,
    load_golden,
    manifest_path,
    rng_draws,
)
from grad.checkpoint import load_gvc_model
from grad.diffusion import ScoreDiffusion
from grad.flow import FlowMatching
from grad.samplers import NoiseSource
from grad.utils import f0_to_coarse, fix_len_compatibility

_MODELS: dict = {}


def _config(version: str):
    return load_config(REPO_ROOT / "configs" / "v2.yaml") if version == "v2" else load_config()


@pytest.fixture(scope="module")
def model_for(tmp_path_factory):
    """GradSVC with the recipe weights of a golden file, loaded from an official-format file (cached per weights)."""

    def get(meta: dict):
        w = meta["weights"]
        key = (Path(w["manifest"]).name, w.get("base_seed"), meta["version"])
        if key not in _MODELS:
            fr = fill_recipe()
            manifest = fr.load_manifest(str(manifest_path(meta)))
            state = fr.fill_state_dict(manifest, w.get("base_seed"))
            path = tmp_path_factory.mktemp("gvc") / "gvc.pretrain.pth"
            torch.save(fr.build_checkpoint(manifest, state, prefix=w.get("key_prefix_in_file") or ""), path)
            model, _ = load_gvc_model(path, _config(meta["version"]))
            _MODELS[key] = model
        return _MODELS[key]

    yield get
    _MODELS.clear()


class EstimatorRecorder:
    """Forward hook that keeps every estimator call's x, t and output."""

    def __init__(self, module: torch.nn.Module):
        self.x, self.t, self.out = [], [], []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        x, _, _, t, _ = args
        self.x.append(x.detach().clone())
        self.t.append(float(t.reshape(-1)[0]))
        self.out.append(output.detach().clone())

    def remove(self):
        self.handle.remove()


def sampler_of(meta: dict) -> str:
    """Our name of the solver a sampling golden ran, from its ``meta_json`` ``case`` text."""
    case = meta["case"]
    if "MaxLikelihood" in case:
        return "ml"
    if "Euler" in case:
        return "euler"
    pytest.fail(f"golden {meta['case_id']} ({meta['version']}): no known solver named in its case {case!r}")


@pytest.mark.parametrize("path", golden_cases("f0_coarse"))
def test_golden_f0_coarse(path):
    g, _ = load_golden(path)
    coarse = f0_to_coarse(torch.from_numpy(g["in_f0"]))
    assert coarse.dtype == torch.int64
    np.testing.assert_array_equal(coarse.numpy(), g["out_coarse"])
    np.testing.assert_array_equal([fix_len_compatibility(int(n)) for n in g["in_fix_len_n"]], g["out_fix_len"])


@pytest.mark.parametrize("path", golden_cases("gvc_encoder"))
def test_golden_gvc_encoder(path, model_for):
    g, meta = load_golden(path)
    model = model_for(meta)
    vec, pit, spk = (torch.from_numpy(g[k]) for k in ("in_vec", "in_pit", "in_spk"))
    lengths = torch.from_numpy(g["in_lengths"])
    with torch.inference_mode():
        coarse = f0_to_coarse(pit)
        np.testing.assert_array_equal(coarse.numpy(), g["out_pit_coarse"])
        pit_emb = model.pit_emb(coarse)
        spk64 = model.spk_emb(spk)
        assert_close(pit_emb, g["out_pit_emb"], atol(path, "pit_emb", 1e-6), "pit_emb")
        assert_close(spk64, g["out_spk_emb"], atol(path, "spk_emb", 1e-5), "spk_emb")
        mu, mask, prenet = model.encoder(vec.transpose(1, 2), pit_emb.transpose(1, 2), spk64, lengths)
        assert_close(prenet, g["out_prenet_out"], atol(path, "prenet_out", 5e-5), "prenet_out")
        assert_close(mu, g["out_mu_x"], atol(path, "mu_x", 1e-4), "mu_x")
        np.testing.assert_array_equal(mask.numpy(), g["out_mask_x"])
        # the public entry point gives the same
        mu2, mask2 = model.encode(vec, pit, spk, lengths)
        assert torch.equal(mu2, mu) and torch.equal(mask2, mask)
        # item 0 alone without padding: a different result where the batch padded it (the prenet norm sees the
        # padding: docs/conventions.md#prenet-normalisation-sees-the-padding)
        n = int(lengths[0])
        mu_alone, _, _ = model.encoder(vec[:1, :n].transpose(1, 2), pit_emb[:1, :n].transpose(1, 2), spk64[:1],
                                       lengths[:1])
        tol = atol(path, "mu_x_unpadded", 1e-4)
        assert_close(mu_alone, g["out_mu_x_unpadded"], tol, "mu_x_unpadded")
        golden_gap = float(np.abs(g["out_mu_x_unpadded"] - g["out_mu_x"][:1, :, :n]).max())
        if golden_gap > 4 * tol:  # the vector set shows the padding effect: ours shows it too
            assert float((mu_alone - mu[:1, :, :n]).abs().max()) > golden_gap / 2


@pytest.mark.parametrize("path", golden_cases("gvc_unet"))
def test_golden_gvc_unet(path, model_for):
    g, meta = load_golden(path)
    est = model_for(meta).decoder.estimator
    spk64, x, mask, mu, t = (torch.from_numpy(g[k]) for k in ("in_spk64", "in_x", "in_mask", "in_mu", "in_t"))
    with torch.inference_mode():
        assert_close(est.spk_mlp(spk64), g["out_spk_mlp_out"], atol(path, "spk_mlp_out", 1e-5), "spk_mlp_out")
        assert_close(est.time_embedding(t, x.shape[0]), g["out_time_mlp_out"], atol(path, "time_mlp_out", 1e-5),
                     "time_mlp_out")
        assert_close(est(x, mask, mu, t, spk64), g["out_est"], atol(path, "est", 1e-4), "est")
        if "out_est_scalar_t" in g:  # V3 passes a 0-d t: the vector set's own (in_t_scalar)
            out = est(x, mask, mu, torch.from_numpy(np.asarray(g["in_t_scalar"])), spk64)
            assert_close(out, g["out_est_scalar_t"], atol(path, "est_scalar_t", 1e-4), "est_scalar_t")


@pytest.mark.parametrize("path", golden_cases("gvc_sampling"))
def test_golden_gvc_sampling(path, model_for):
    g, meta = load_golden(path)
    model = model_for(meta)
    v2 = meta["version"] == "v2"
    steps = int(call_arg(meta, "n_timesteps"))
    temperature = float(call_arg(meta, ("temperature", "rature")))
    # every draw the original made, in its order; its last (for its unused first output) is left over
    noises = [torch.from_numpy(n) for n in rng_draws(g, meta)]
    vec, pit, spk = (torch.from_numpy(g[k])[None] for k in ("in_vec", "in_pit", "in_spk"))
    rec = EstimatorRecorder(model.decoder.estimator)
    try:
        out = model.synthesise(vec, pit, spk, steps=steps, temperature=temperature, sampler=sampler_of(meta),
                               noise=noises)
    finally:
        rec.remove()
    n, n_mels = vec.shape[1], g["out_mel"].shape[0]
    assert out["mel"].shape == out["mu"].shape == (1, n_mels, n) and out["mask"].shape == (1, 1, n)
    assert_close(out["mel"][0], g["out_mel"], atol(path, "mel", 5e-5), "mel")
    assert_close(out["mu"], g["out_mu_x"][..., :n], atol(path, "mu_x", 1e-4), "mu_x")
    assert len(rec.out) == steps
    assert_close(torch.stack(rec.x), g["out_est_in_x"], atol(path, "est_in_x", 2e-4), "est_in_x")
    assert_close(np.array(rec.t), g["out_est_in_t"], 1e-7, "est_in_t")
    assert_close(torch.stack(rec.out), g["out_est_out"], atol(path, "est_out", 2e-4), "est_out")
    if v2:  # the ML sampler re-masks every step: the padded frames of the decoder output are 0
        np.testing.assert_array_equal(g["out_y_dec_full"][..., n:], 0.0)
        return
    # V3: the padded decoder output keeps the unmasked start noise (docs/conventions.md#v3-start-noise-is-not-masked);
    # ours too, via encode + decode
    with torch.inference_mode():
        mu = torch.from_numpy(g["out_mu_x"])
        mask = torch.from_numpy(g["out_mask_x"])
        y = model.decode(mu, mask, spk, steps, temperature, sampler_of(meta), NoiseSource(noises))
    assert_close(y, g["out_y_dec_full"], atol(path, "y_dec_full", atol(path, "mel", 5e-5)), "y_dec_full")
    assert_close(y[..., n:], temperature * noises[0][..., n:], 1e-6, "padded frames")


class StubVelocity(torch.nn.Module):
    """The V3 golden's analytic estimator: v = (mu - (1 - eps) x) / (1 - (1 - eps) t) * mask (eps: from its meta)."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x, mask, mu, t, spk):
        return (mu - (1 - self.eps) * x) / (1 - (1 - self.eps) * t) * mask


class StubScore(torch.nn.Module):
    """The V2 golden's exact score for data = mu: -(x - mu) / (1 - exp(-(a t + b t^2))) * mask (a, b: its meta)."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, mask, mu, t, spk):
        t = t.view(-1, 1, 1)
        return -(x - mu) / (1 - torch.exp(-(self.a * t + self.b * t**2))) * mask


@pytest.mark.parametrize("path", golden_cases("gvc_solver_stub"))
def test_golden_gvc_solver_stub(path):
    g, meta = load_golden(path)
    spk64, mu, mask = (torch.from_numpy(g[k]) for k in ("in_spk64", "in_mu", "in_mask"))
    steps = int(call_arg(meta, "n_timesteps"))
    if meta["version"] == "v2":
        stub = StubScore(call_number(meta, "exp(-({n} t + "), call_number(meta, " t + {n} t^2"))
        decoder, sampler = ScoreDiffusion(stub), sampler_of(meta)
        # the harness computed the start state itself: in_z = in_mu + in_noise_z / temperature
        temperature = call_number(meta, "in_noise_z / {n}")
        noise = [torch.from_numpy(g["in_noise_z"])] + list(torch.from_numpy(g["in_noise_stoc"]))
    else:
        eps = call_number(meta, "(mu - (1-{n}) x)")
        assert call_number(meta, "(1 - (1-{n}) t)") == eps
        decoder, sampler = FlowMatching(StubVelocity(eps)), sampler_of(meta)
        temperature = float(call_arg(meta, "temperature"))
        noise = [torch.from_numpy(g["in_noise_z"])]
    if "in_z" in g:  # V2: the start state the original computed
        start = decoder.start_state(mu, temperature, NoiseSource(noise[:1]))
        assert_close(start, g["in_z"], 0.0, "z")
    rec = EstimatorRecorder(decoder.estimator)
    try:
        with torch.inference_mode():
            x = decoder.sample(mu, mask, spk64, steps, temperature, sampler, NoiseSource(noise))
    finally:
        rec.remove()
    assert_close(x, g["out_x"], atol(path, "x", 5e-5), "x")
    assert_close(torch.stack(rec.x), g["out_est_in_x"], atol(path, "est_in_x", atol(path, "x", 5e-5)), "est_in_x")
    assert_close(np.array(rec.t), g["out_est_in_t"], 1e-7, "est_in_t")
    assert_close(torch.stack(rec.out), g["out_est_out"], atol(path, "est_out", 5e-4), "est_out")


# ------------------------------------------------- the tests above read their inputs from the file, not constants
def _derived_set(path: Path, folder: Path, arrays: dict, meta: dict) -> Path:
    """Write a golden file beside a copy of its set's tolerances (same file name, so the same tolerances apply)."""
    folder.mkdir(parents=True, exist_ok=True)
    tolerances = path.parent / "tolerances.json"
    if tolerances.is_file():
        shutil.copy(tolerances, folder / tolerances.name)
    out = folder / path.name
    np.savez(out, meta_json=np.array(json.dumps(meta)), **arrays)
    return out


def _restate(meta: dict, pattern: str, value: float) -> dict:
    """``meta`` with the number at ``{n}`` of ``pattern`` in its ``call`` text replaced by ``value``."""
    meta = copy.deepcopy(meta)
    head, tail = pattern.split("{n}")
    regex = re.escape(head).replace(r"\ ", r"\s*") + r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?" + re.escape(tail)
    meta["call"], count = re.subn(regex, f"{head}{value!r}{tail}", meta["call"])
    assert count, (pattern, meta["call"])
    return meta


@pytest.mark.parametrize("path", golden_cases("gvc_unet", "v3"))
def test_golden_unet_reads_the_scalar_time(path, model_for, tmp_path):
    """A vector set whose 0-d time is another value: item 0 of this one with ``in_t_scalar = in_t[0]``, so its
    ``out_est_scalar_t`` is the original's ``out_est[0]``. A test that passed a constant time fails on it."""
    g, meta = load_golden(path)
    item = {k: v[:1] for k, v in g.items() if v.ndim and k != "out_est_scalar_t"}
    item["in_t_scalar"] = g["in_t"][0].copy()
    item["out_est_scalar_t"] = g["out_est"][:1]
    test_golden_gvc_unet(_derived_set(path, tmp_path / "t_scalar", item, meta), model_for)


def _temperature_pattern(meta: dict) -> list[str]:
    return [p for p in ("temperature={n}", "rature={n}", "in_noise_z / {n}")
            if re.search(re.escape(p.split("{n}")[0]).replace(r"\ ", r"\s*") + r"-?\d", meta["call"])]


@pytest.mark.parametrize("path", golden_cases("gvc_sampling") + golden_cases("gvc_solver_stub"))
def test_golden_sampling_reads_the_temperature(path, model_for, tmp_path):
    """A vector set made with twice the temperature and noise rescaled so the original's start state is the same
    (V3 multiplies the noise by it, V2 divides; a power of two keeps every value exact): the outputs are this set's.
    A test that passed a constant temperature fails on it."""
    g, meta = load_golden(path)
    temperature = 2.0 * (call_number(meta, "in_noise_z / {n}") if "in_noise_z / " in meta["call"]
                         else float(call_arg(meta, ("temperature", "rature"))))
    scale = 2.0 if meta["version"] == "v2" else 0.5
    first = "in_noise_z" if meta["case_id"] == "gvc_solver_stub" else "in_noise_randn_like_0"
    arrays = dict(g)
    arrays[first] = g[first] * np.float32(scale)
    for pattern in _temperature_pattern(meta):
        meta = _restate(meta, pattern, temperature)
    derived = _derived_set(path, tmp_path / "temperature", arrays, meta)
    if meta["case_id"] == "gvc_solver_stub":
        test_golden_gvc_solver_stub(derived)
    else:
        test_golden_gvc_sampling(derived, model_for)
