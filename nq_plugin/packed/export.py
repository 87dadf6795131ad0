"""Exporting a trained checkpoint of the plugin (``nq_lstm_lm``, ``nq_lstm_classifier``) to the
bit-packed format: the library behind ``nq-pack`` (nq_plugin/cli/pack.py) and the zoo's packed
copies (nq_plugin/zoo/derive.py).

Writes into OUTDIR (which must not hold a packed model already, unless ``force``):
  model.safetensors  packed LSTM words + per-row scales, folded norms, bias, and the rest of the
                     model (embeddings / softmax; the classifier's initial state and layer)
  config.json        model configuration + versioned quantization_config (checked on load)
  dict.txt           language models: the vocabulary (given, or from the training data
                     directory the checkpoint records)
  checkpoint.pt      a fairseq checkpoint of model nq_lstm_lm_packed / nq_lstm_classifier_packed
                     holding the same tensors

Byte-reproducible: the same checkpoint packs to the same bytes (the zoo relies on it).
"""
import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..checkpoint import DIGEST_KEY, CheckpointError, load_checkpoint, model_config, seal
from ..files import atomic_copy, write_error
from .format import FORMAT_NAME, quantization_config
from .io import save_packed
from ..storage import STORAGE_KEY, Stored, encode_state, stored_tensors


@dataclass
class PackedExport:
    """What a packed model's ``export`` returns: the packed module whose tensors are written (its
    ``lstm`` the :class:`~nq_plugin.packed.PackedNQLSTM`), the packed model's configuration, the
    prefix of its tensors in the packed checkpoint, and extra entries of that checkpoint."""
    module: torch.nn.Module
    config: Dict[str, Any]
    prefix: str = ""
    extra_state: Dict[str, Any] = field(default_factory=dict)


OUTPUTS = ("model.safetensors", "config.json", "dict.txt", "checkpoint.pt")


def find_dictionary(state, given: Optional[str]) -> str:
    if given:
        if not os.path.isfile(given):
            raise FileNotFoundError(f"--dict {given} not found")
        return given
    task = (state.get("cfg") or {}).get("task") or {}
    data = str(task.get("data") or "")
    for path in data.split(os.pathsep) if data else []:
        candidate = os.path.join(path, "dict.txt")
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no dict.txt at the training data directory {data!r} recorded in the "
                            "checkpoint; pass --dict DATA_DIR/dict.txt")


def _written_by_nq_pack(outdir: str) -> bool:
    try:
        with open(os.path.join(outdir, "config.json")) as f:
            q = json.load(f).get("quantization_config") or {}
        return q.get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def check_outdir(outdir: str, inputs: List[str], force: bool) -> None:
    """OUTDIR may receive the outputs: none of them is an input (the checkpoint being packed,
    the dictionary), and existing outputs are replaced only with --force and only when OUTDIR
    holds an earlier nq-pack output (its config.json says so) -- never a file nq-pack did not
    write."""
    for name in OUTPUTS:
        target = os.path.join(outdir, name)
        for src in inputs:
            if os.path.exists(target) and os.path.samefile(target, src) and \
                    not (name == "dict.txt" and src == inputs[-1] and _written_by_nq_pack(outdir)):
                raise FileExistsError(
                    f"{target} is an input of this command ({src}); packing into {outdir} would "
                    "overwrite it. Choose another OUTDIR (e.g. a new folder packed/)")
    existing = [f for f in OUTPUTS if os.path.exists(os.path.join(outdir, f))]
    if existing and not force:
        raise FileExistsError(f"{outdir} already holds {', '.join(existing)}; choose another "
                              "OUTDIR or pass --force to overwrite an earlier nq-pack output")
    if existing and not _written_by_nq_pack(outdir):
        raise FileExistsError(f"{outdir} holds {', '.join(existing)} that nq-pack did not write "
                              "(no nq-pack config.json); --force replaces only an earlier "
                              "nq-pack output. Choose another OUTDIR")


@contextlib.contextmanager
def staged_outputs(outdir: str, needed: int):
    """Write the outputs into a temporary folder beside OUTDIR, then move each into it: a
    failed write (a full disk, no permission) leaves OUTDIR as it was, removes an OUTDIR this
    call created, and is one message naming the path (and the space needed)."""
    created = not os.path.exists(outdir)
    parent = os.path.dirname(os.path.abspath(outdir))
    stage = None
    try:
        os.makedirs(parent, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=".nq-pack.", dir=parent)
        yield stage
        os.makedirs(outdir, exist_ok=True)
        for name in sorted(os.listdir(stage)):
            os.replace(os.path.join(stage, name), os.path.join(outdir, name))
    except OSError as err:
        if created and os.path.isdir(outdir) and not os.listdir(outdir):
            os.rmdir(outdir)
        raise write_error(err, outdir, needed) from None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)


def pack_checkpoint(checkpoint: str, outdir: str, dictionary: Optional[str] = None,
                    force: bool = False) -> dict:
    """Write the packed copy of the plugin's trained ``checkpoint`` into ``outdir`` (see the
    module doc); returns the LSTM's packed and fp32 weight bytes. The model's registered class
    names its packed model (``packed_model``, whose ``export`` builds it) and says whether it
    has a dictionary (``dictionary_tensor``)."""
    from fairseq.data import Dictionary
    from fairseq.models import MODEL_REGISTRY

    from ..models.loading import model_class, model_from_state
    from ..nn.lstm import NQLSTM

    state = load_checkpoint(checkpoint)
    cfg = model_config(state)
    cls = model_class(state, checkpoint)
    if cls.is_packed:
        raise CheckpointError(f"{checkpoint} is already packed")
    if cls.packed_model is None:
        raise CheckpointError(f"{checkpoint}: model {cfg.get('_name')!r} has no packed form")
    vocab, dict_path = None, None
    if cls.dictionary_tensor is not None:
        dict_path = find_dictionary(state, dictionary)
        vocab = Dictionary.load(dict_path)
    check_outdir(outdir, [checkpoint] + ([dict_path] if dict_path else []), force)
    try:
        model = model_from_state(state, vocab, source=checkpoint)
    except CheckpointError as err:
        if dict_path is None:
            raise
        raise CheckpointError(f"{err} (with the dictionary {dict_path})") from None
    export = MODEL_REGISTRY[cls.packed_model].export(model, cfg, vocab)
    lstm = next(m for m in model.modules() if isinstance(m, NQLSTM))
    prefix = export.prefix
    tensors = {prefix + k: v for k, v in export.module.state_dict().items() if torch.is_tensor(v)}
    # weights outside the LSTM that the checkpoint stores compactly (the zoo's int8 embedding
    # and softmax, nq_plugin/storage.py) are carried as stored: the model decoded them into
    # its parameters, so the packed copy decodes to the same values; legacy fp16 ones too
    source = state.get("model") or {}
    carried = {}
    for name, stored in stored_tensors(source):
        if name in tensors and not name.startswith(prefix + "lstm."):
            if not torch.equal(stored.decode(), tensors[name].float()):
                raise CheckpointError(f"{checkpoint}: {name} as stored does not decode to the "
                                      "model's tensor; the file is damaged")
            carried[name] = stored
    for k, v in list(tensors.items()):
        if k not in carried and not k.startswith(prefix + "lstm.") and torch.is_tensor(
                source.get(k)) and source[k].dtype == torch.float16 and v.is_floating_point():
            carried[k] = Stored("float16", {"": v.half()})
    tensors = encode_state(tensors, carried)
    record = tensors.pop(STORAGE_KEY, None)
    other = "fp32" if not carried else "; ".join(
        f"{stored.encoding}: {k}" for k, stored in sorted(carried.items())) + "; the rest fp32"
    packed_lstm = export.module.lstm
    config = {"model": export.config,
              "quantization_config": quantization_config(packed_lstm.metas,
                                                         packed_lstm.norm_steps, other),
              "source_checkpoint": os.path.basename(checkpoint)}
    fairseq_state = {k: v for k, v in state.items() if k not in ("last_optimizer_state",)}
    fairseq_state["cfg"] = dict(state["cfg"], model=export.config)
    fairseq_state["model"] = dict(tensors, **export.extra_state)
    if record is not None:
        fairseq_state["model"][STORAGE_KEY] = record
    fairseq_state["last_optimizer_state"] = None
    if DIGEST_KEY in source:  # a sealed (zoo) checkpoint's packed copy is sealed too
        seal(fairseq_state)
    needed = 2 * sum(v.numel() * v.element_size() for v in tensors.values())  # both files
    with staged_outputs(outdir, needed) as stage:
        save_packed(stage, tensors, config)
        if dict_path is not None:
            dict_out = os.path.join(outdir, "dict.txt")
            if not (os.path.exists(dict_out) and os.path.samefile(dict_path, dict_out)):
                atomic_copy(dict_path, os.path.join(stage, "dict.txt"))
        with open(os.path.join(stage, "checkpoint.pt"), "wb") as f:  # a file object: torch
            torch.save(fairseq_state, f)  # names the archive after a path's stem

    words = sum(v.numel() * v.element_size() for k, v in tensors.items()
                if k.startswith(prefix + "lstm.") and k.endswith(("_plus", "_nonzero",
                                                                 "_negative", "_weight")))
    fp32 = sum(4 * layer.weight_ih.numel() + 4 * layer.weight_hh.numel()
               for layer in lstm.layers)
    return {"outdir": outdir, "lstm_weight_bytes": words, "fp32_lstm_weight_bytes": fp32,
            "ratio": fp32 / words}
