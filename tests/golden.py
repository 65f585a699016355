"""Golden-vector helpers shared by the parity tests (docs/conventions.md#golden-vectors).

Vectors are read from ``$GVC_GOLDEN_DIR`` when set, else ``tests/fixtures/golden``; each test is parametrised over
every ``.npz`` there whose ``meta_json.case_id`` matches, with the file name in the test id. Weights are rebuilt
from the manifests with the fill recipe and the ``base_seed`` recorded in the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"


def golden_dir() -> Path:
    return Path(os.environ.get("GVC_GOLDEN_DIR") or FIXTURES / "golden")


def meta_of(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["meta_json"]))


def golden_cases(case_id: str, version: str | None = None) -> list:
    """``pytest.param(path, id=<file name>)`` for every golden file of ``case_id`` (and ``version``)."""
    params = []
    for path in sorted(golden_dir().glob("*.npz")):
        meta = meta_of(path)
        if meta.get("case_id") != case_id or (version is not None and meta.get("version") != version):
            continue
        params.append(pytest.param(path, id=path.name))
    if not params:  # keep the test visible (and skipped with a reason) instead of silently collecting nothing
        params.append(pytest.param(None, id=f"no-{case_id}-golden", marks=pytest.mark.skip(reason="no golden file")))
    return params


def load_golden(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta_json"}
        meta = json.loads(str(z["meta_json"]))
    return arrays, meta


_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_CALL_ARG = re.compile(rf"\b([A-Za-z_]\w*)\s*=\s*(True|False|{_NUMBER})(?![\w.-])")


def _number(text: str) -> int | float | bool:
    if text in ("True", "False"):
        return text == "True"
    return float(text) if any(c in text for c in ".eE") else int(text)


def call_args(meta: dict, field: str = "call") -> dict[str, int | float | bool]:
    """The ``name=value`` arguments (numbers and booleans) that ``meta_json[field]`` records for the original call.

    The shipped format states the call's parameters only in this text (e.g. ``n_timesteps=10, temperature=1.015``);
    a name given twice (``rature=1.015`` then ``temperature=1.015``) must have one value.
    """
    found: dict[str, int | float | bool] = {}
    for name, value in _CALL_ARG.findall(str(meta.get(field, ""))):
        value = _number(value)
        assert found.setdefault(name, value) == value, f"meta_json {field!r}: {name} given as {found[name]} and {value}"
    return found


def call_arg(meta: dict, names: str | tuple[str, ...], field: str = "call"):
    """The first of ``names`` that ``meta_json[field]`` records (see ``call_args``); fails naming what is missing."""
    names = (names,) if isinstance(names, str) else names
    args = call_args(meta, field)
    for name in names:
        if name in args:
            return args[name]
    pytest.fail(f"golden {meta.get('case_id')} ({meta.get('version')}): meta_json {field!r} records no "
                f"{' / '.join(names)}: {meta.get(field)!r}")


def call_number(meta: dict, pattern: str, field: str = "call") -> float:
    """A number that ``meta_json[field]`` states inside a formula: ``pattern`` is the literal text around it with
    ``{n}`` in its place (e.g. ``"in_noise_z / {n}"``; a space matches any spacing); fails naming the pattern when
    the text does not contain it."""
    regex = re.escape(pattern).replace(re.escape("{n}"), f"({_NUMBER})").replace(r"\ ", r"\s*")
    match = re.search(regex, str(meta.get(field, "")))
    if not match:
        pytest.fail(f"golden {meta.get('case_id')} ({meta.get('version')}): meta_json {field!r} does not state "
                    f"{pattern!r}: {meta.get(field)!r}")
    return float(match.group(1))


def rng_draws(arrays: dict[str, np.ndarray], meta: dict, log: str = "rng_call_log") -> list[np.ndarray]:
    """The noise tensors the original drew, in its draw order: ``meta_json[log]`` lists every patched call; the
    k-th ``torch.<fn>`` call returned ``in_noise_<fn>_<k>`` (the shipped sampling files' naming)."""
    counts: dict[str, int] = {}
    out = []
    for call in meta[log]:
        fn = call["fn"].removeprefix("torch.")
        k = counts[fn] = counts.get(fn, -1) + 1
        name = f"in_noise_{fn}_{k}"
        assert name in arrays, f"golden {meta.get('case_id')}: {log} draw {len(out)} ({call['fn']}) has no {name}"
        assert list(arrays[name].shape) == list(call["shape"]), f"{name}: shape {arrays[name].shape} != {call}"
        out.append(arrays[name])
    return out


def component_of(meta: dict) -> str:
    """The manifest name (``gvc_v3``, ``hubert_soft``, ...) of a golden file's weights."""
    return Path(meta["weights"]["manifest"]).stem


@lru_cache(maxsize=1)
def fill_recipe():
    spec = importlib.util.spec_from_file_location("fill_recipe", REFERENCE / "fill_recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def manifest_path(meta_or_name: dict | str) -> Path:
    if isinstance(meta_or_name, dict):
        name = Path(meta_or_name["weights"]["manifest"]).name
    else:
        name = meta_or_name if meta_or_name.endswith(".json") else meta_or_name + ".json"
    return REFERENCE / "manifests" / name


def recipe_state_dict(meta: dict):
    """The recipe weights a golden file was made with (manifest and base seed from its meta)."""
    fr = fill_recipe()
    manifest = fr.load_manifest(str(manifest_path(meta)))
    return fr.fill_state_dict(manifest, meta["weights"].get("base_seed"))


def write_official_checkpoint(component: str, path: Path, base_seed: int | None = None, prefix: str = "") -> Path:
    """Write a recipe-filled file in the official container format of ``component`` (e.g. ``gvc_v3``)."""
    import torch

    fr = fill_recipe()
    manifest = fr.load_manifest(str(manifest_path(component)))
    sd = fr.fill_state_dict(manifest, base_seed)
    torch.save(fr.build_checkpoint(manifest, sd, prefix=prefix), path)
    return path


@lru_cache(maxsize=4)
def _tolerances(folder: str) -> dict:
    for candidate in (Path(folder) / "tolerances.json", FIXTURES / "golden" / "tolerances.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())["cases"]
    return {}


def atol(path: Path, output: str, default: float) -> float:
    """Suggested absolute tolerance for ``out_<output>`` of golden ``path``.

    Looked up by file stem, then by ``case_id[_version]``; scaled by the output's peak for vector sets whose
    peaks differ from the shipped ones (``atol_over_peak``).
    """
    cases = _tolerances(str(path.parent))
    meta = meta_of(path)
    keys = [path.stem, meta.get("case_id", "")]
    if meta.get("version"):
        keys.insert(1, f"{meta['case_id']}_{meta['version']}")
        keys.insert(2, f"gvc_{meta['version']}_{meta['case_id'].removeprefix('gvc_')}")
    for key in keys:
        entry = cases.get(key, {}).get(output)
        if entry and "suggested" in entry and "atol" in entry["suggested"]:
            tol = entry["suggested"]["atol"]
            with np.load(path) as z:
                name = f"out_{output}"
                if name in z.files and "atol_over_peak" in entry["suggested"]:
                    peak = float(np.abs(z[name]).max())
                    tol = max(tol, entry["suggested"]["atol_over_peak"] * peak)
            return tol
    return default


def assert_close(actual, expected, tol: float, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != golden {expected.shape}"
    err = float(np.abs(actual - expected).max()) if actual.size else 0.0
    assert err <= tol, f"{what}: max |diff| {err:.3g} > atol {tol:.3g}"


def cached_official_checkpoint(component: str, base_seed: int | None = None, prefix: str = "") -> Path:
    """``write_official_checkpoint`` once per (manifest, recipe, seed, prefix), kept in a cache folder.

    Filling the large manifests takes tens of seconds; tests share the files. The cache is
    ``$GVC_TEST_CACHE`` or ``~/.cache/grad-svc-tests``; the key hashes the manifest and the recipe source.
    """
    import hashlib

    if base_seed is None:
        base_seed = int(json.loads(manifest_path(component).read_text())["recipe"]["base_seed"])
    digest = hashlib.sha1()
    digest.update(manifest_path(component).read_bytes())
    digest.update((REFERENCE / "fill_recipe.py").read_bytes())
    digest.update(f"{base_seed}|{prefix}".encode())
    folder = Path(os.environ.get("GVC_TEST_CACHE") or Path.home() / ".cache" / "grad-svc-tests")
    path = folder / f"{component}-{digest.hexdigest()[:12]}.pt"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        write_official_checkpoint(component, tmp, base_seed, prefix)
        os.replace(tmp, path)
    return path
