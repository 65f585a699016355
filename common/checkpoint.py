"""Checkpoint loading shared by every model: safe ``torch.load``, missing-file messages, key reports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# where the user gets each official file (README.md, "Pretrained files")
PRETRAINED_SOURCES = {
    "hubert": ("hubert_pretrain/hubert-soft-0d54a1f4.pt", "https://github.com/bshall/hubert/releases/tag/v0.1"),
    "speaker": (
        "speaker_pretrain/best_model.pth.tar",
        "https://drive.google.com/drive/folders/15oeBYf6Qn1edONkVLXe82MzdIi3O_9m3 (Speaker-Encoder by @mueller91)",
    ),
    "bigvgan": (
        "bigvgan_pretrain/nsf_bigvgan_pretrain_32K.pth",
        "https://github.com/PlayVoice/NSF-BigVGAN/releases/augment",
    ),
    "gvc": ("grad_pretrain/gvc.pretrain.pth", "https://github.com/PlayVoice/Grad-SVC/releases/tag/20230920"),
}


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or of the wrong format (one line, names the file)."""


@dataclass(frozen=True)
class Pretrained:
    """A pretrained file a command needs: its path, its ``PRETRAINED_SOURCES`` kind, the command's flag that
    overrides the path (flags differ from script to script) and the offline alternative, if there is one."""

    path: str | Path
    kind: str | None = None
    flag: str | None = None
    offline: str | None = None

    def missing_line(self) -> str:
        """One line: the path, where to get the file, the flag, the offline alternative."""
        where = ""
        if self.kind in PRETRAINED_SOURCES:
            default, url = PRETRAINED_SOURCES[self.kind]
            where = f"; download it from {url} and put it at {default}"
        how = f", or give its path with {self.flag}" if self.flag else " (or pass its path)" if where else ""
        offline = f"; offline alternative: {self.offline}" if self.offline else ""
        return f"{self.path}: pretrained file not found{where}{how}{offline}"


def require_pretrained(files: Iterable[Pretrained]) -> None:
    """Check every file before any is loaded: a ``CheckpointError`` naming all the missing ones, one line each
    (a single missing file is a one-line message), so a user fixes them in one go, not one per run."""
    lines = [f.missing_line() for f in files if not Path(f.path).is_file()]
    if len(lines) == 1:
        raise CheckpointError(lines[0])
    if lines:
        raise CheckpointError(f"{len(lines)} pretrained files are missing:\n" + "\n".join(f"  {x}" for x in lines))


def require_file(path: str | Path, kind: str | None = None, flag: str | None = None) -> Path:
    """Return ``path`` if it is a file, else raise ``CheckpointError`` naming it, where to get it and ``flag``."""
    require_pretrained([Pretrained(path, kind, flag)])
    return Path(path)


def load_checkpoint(path: str | Path, kind: str | None = None, weights_only: bool = True) -> object:
    """``torch.load`` on CPU with ``weights_only`` (default True); errors name the file."""
    p = require_file(path, kind)
    try:
        try:  # memory-mapped: the tensors are read once, into the model, instead of into memory and then copied
            return torch.load(p, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(p, map_location="cpu", weights_only=weights_only)  # a pre-zipfile (legacy) save
    except Exception as exc:  # pickle / zip / weights_only errors all mean "cannot read this file"
        raise CheckpointError(f"{p}: cannot load checkpoint: {describe_load_error(exc)}") from None


def describe_load_error(exc: Exception) -> str:
    """One line for a failed ``torch.load``: a file pickling objects other than tensors says so (and that loading it
    anyway needs trust); anything else is a corrupt or non-PyTorch file (torch's own text is then misleading: a
    garbage file gives ``KeyError: 101`` or advice to retry with weights_only=False)."""
    text = str(exc).strip()
    if "Unsupported global" in text:
        return ("it pickles objects other than tensors (load with weights_only=False only if you trust it): "
                + next((line.strip() for line in text.splitlines() if "Unsupported global" in line), ""))
    first = text.splitlines()[0] if text else ""
    return f"corrupt or not a PyTorch file ({exc.__class__.__name__}{': ' + first[:120] if first else ''})"


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. ``module.`` of DataParallel files)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_report(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    allow_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
    assign: bool = False,
) -> tuple[list[str], list[str]]:
    """Load ``state`` into ``model`` and report key differences instead of silently keeping random weights.

    Raises ``CheckpointError`` for missing keys (other than those starting with ``allow_missing``) and for shape
    mismatches; unexpected keys are logged (those starting with ``ignore_unexpected`` silently). ``assign``: the
    file's tensors become the model's (``load_state_dict(assign=True)``: no copy; converted where the dtype
    differs).
    Returns (missing, unexpected).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    hard_missing = [k for k in missing if not k.startswith(allow_missing)] if allow_missing else missing
    if hard_missing:
        shown = ", ".join(hard_missing[:5]) + (f" ... ({len(hard_missing)} in all)" if len(hard_missing) > 5 else "")
        raise CheckpointError(f"{source}: missing {len(hard_missing)} keys of the model: {shown}")
    bad_shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        shown = "; ".join(bad_shapes[:3]) + (f" ... ({len(bad_shapes)} in all)" if len(bad_shapes) > 3 else "")
        raise CheckpointError(f"{source}: shape mismatch (file vs model): {shown}")
    loud = [k for k in unexpected if not k.startswith(ignore_unexpected)] if ignore_unexpected else unexpected
    if loud:
        log.warning("%s: %d keys not used by the model, ignored (e.g. %s)", source, len(loud), loud[0])
    # assign keeps the file's dtypes: convert to the model's (a half-precision save into a float32 model)
    model.load_state_dict({k: (v.to(own[k].dtype) if assign and v.dtype != own[k].dtype else v)
                           for k, v in state.items() if k in own}, strict=False, assign=assign)
    if missing:
        log.info("%s: %d keys not in the file kept their initial values (e.g. %s)", source, len(missing), missing[0])
    return missing, unexpected


def build_loaded(factory: Callable[[], torch.nn.Module], state: Mapping[str, torch.Tensor], source: str
                 ) -> torch.nn.Module:
    """``factory()`` built on the meta device, then given the file's tensors as its own: an inference load of a
    model whose every tensor is in the file (``load_state_report`` checks the keys and shapes).

    No random initial values are drawn and nothing is copied: with ``load_checkpoint``'s memory map the weights stay
    in the file's pages until first used (HuBERT-soft: about a second less than allocating and copying 360 MB).
    Only for models whose construction makes no meta tensor op that PyTorch implements in Python (``nn.Embedding``'s
    ``normal_`` is one: it imports torch._dynamo, seconds). Returns the model on the CPU.
    """
    # meta-device construction + load_state_dict(assign=True): PyTorch's recipe for loading without copies
    with torch.device("meta"):
        model = factory()
    load_state_report(model, state, source, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a tensor outside the state dict (a non-persistent buffer): this model cannot be built this way
        raise CheckpointError(f"{source}: {len(left)} model tensors are not in the state dict (e.g. {left[0]})")
    return model
