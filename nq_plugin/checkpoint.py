"""Safe loading of fairseq checkpoints trained with the plugin.

torch >= 2.6 loads with ``weights_only=True``: only tensors, plain containers and numbers, plus
globals put on an allow-list, can be unpickled; anything that could run code is refused. A
checkpoint of the plugin's models (dataclass configs, saved by fairseq as plain containers)
holds nothing else, so fairseq-eval-lm loads it with the default, safe loader -- no
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD and no global switch. The only non-container type that
fairseq may add is ``argparse.Namespace`` (the legacy ``args`` entry, None for our models); it is
a plain attribute bag, and :data:`SAFE_GLOBALS` allow-lists exactly it.

:func:`load_checkpoint` is what the plugin's own commands use: the same safe loader, with errors
that name the problem (missing, truncated/corrupt, refused code-executing content, not a plugin
checkpoint).
"""
import argparse
import hashlib
import os
import pickle
import zipfile
from typing import Any, Dict

import torch
from .errors import UserError

SAFE_GLOBALS = [argparse.Namespace]
torch.serialization.add_safe_globals(SAFE_GLOBALS)


class CheckpointError(ValueError, UserError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a fairseq checkpoint safely (``weights_only=True``) onto the CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch checkpoint (not a zip archive): the file is "
                              "truncated or corrupt; download or copy it again")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # every member's CRC: catches flipped or zeroed bytes
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err} -- the file is truncated "
                              "or corrupt; download or copy it again") from None
    if damaged is not None:
        raise CheckpointError(f"{path} is corrupt: the CRC of its member {damaged} does not "
                              "match (bytes were changed); download or copy it again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = [line for line in str(err).splitlines() if "GLOBAL" in line]
        raise CheckpointError(
            f"refusing to load {path}: it contains objects that the safe loader does not allow "
            f"(a checkpoint of nq_plugin holds only tensors and plain containers), so it was not "
            f"written by nq_plugin or has been tampered with. "
            f"{detail[0].strip() if detail else ''}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err} -- the file is truncated "
                              "or corrupt; download or copy it again") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    check_finite(state["model"], path)
    _last_read["path"] = path
    return state


# A zoo checkpoint carries the sha256 of its tensors inside its model state (written by nq-zoo
# add and nq-pack), verified by the model's own load_state_dict on every loading path
# (fairseq-eval-lm, fairseq's Hub loader, from_pretrained, nq-zoo): the Hub client checks only
# file sizes, and fairseq's loader reads whatever it downloaded.
DIGEST_KEY = "nq_plugin.tensor_sha256"
_last_read = {"path": None}  # the checkpoint fairseq read last, for messages


def tensor_digest(weights: Dict[str, Any]) -> str:
    """sha256 over every tensor of a model state (sorted names, dtype, shape and bytes)."""
    h = hashlib.sha256()
    for name in sorted(k for k, v in weights.items() if torch.is_tensor(v)):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def seal(state: Dict[str, Any]) -> None:
    """Write the digest of ``state['model']``'s tensors into it."""
    state["model"][DIGEST_KEY] = tensor_digest(state["model"])


def unseal(weights: Dict[str, Any]) -> Dict[str, Any]:
    """The model state without its digest, after checking the digest if there is one."""
    if DIGEST_KEY not in weights:
        return weights
    weights = dict(weights)
    recorded = weights.pop(DIGEST_KEY)
    if tensor_digest(weights) != recorded:
        where = _last_read["path"] or "the checkpoint"
        raise CheckpointError(
            f"{where}: its tensors do not match the sha256 digest written into it when it was "
            "published: the file was changed afterwards (tampered with or damaged); download "
            "it again, or restore the original")
    return weights


def track_fairseq_reads() -> None:
    """Remember the path of each checkpoint fairseq's own loader reads, so that a refusal in
    ``load_state_dict`` can name the file."""
    from fairseq import checkpoint_utils
    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "nq_plugin_tracked", False):
        return

    def load_checkpoint_to_cpu(path, *args, **kwargs):
        _last_read["path"] = str(path)
        return original(path, *args, **kwargs)
    load_checkpoint_to_cpu.nq_plugin_tracked = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def check_finite(weights: Dict[str, Any], source: str) -> None:
    """Refuse NaN / infinite parameters, naming the tensor: sign(NaN) is -1 for BinaryConnect
    and 0 for TerConnect, so a damaged latent weight would otherwise pass silently."""
    for name, value in weights.items():
        if torch.is_tensor(value) and value.is_floating_point() and \
                not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{source}: {name} holds {bad} NaN or infinite values; the "
                                  "checkpoint is damaged or its run diverged -- use an earlier "
                                  "checkpoint (checkpoint_best.pt) or retrain")


def model_config(state: Dict[str, Any]) -> Dict[str, Any]:
    """The model section of a checkpoint's config, as a plain dict."""
    cfg = state.get("cfg")
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if model is None and state.get("args") is not None:
        model = vars(state["args"])
    if not model:
        raise CheckpointError("checkpoint has no model configuration (cfg.model)")
    return dict(model)
