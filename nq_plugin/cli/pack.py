"""``nq-pack CHECKPOINT OUTDIR``: export a trained checkpoint of ``nq_lstm_lm`` or
``nq_lstm_classifier`` to the bit-packed format.

Writes into OUTDIR (which must not hold a packed model already, unless --force):
  model.safetensors  packed LSTM words + per-row scales, folded norms, bias, and the rest of the
                     model (embeddings / softmax; the classifier's initial state and layer)
  config.json        model configuration + versioned quantization_config (checked on load)
  dict.txt           language models: the vocabulary (from --dict, or the training data
                     directory the checkpoint records)
  checkpoint.pt      a fairseq checkpoint of model nq_lstm_lm_packed / nq_lstm_classifier_packed
                     holding the same tensors:
                     fairseq-eval-lm DATA --user-dir nq_plugin --task bptt_lm --path OUTDIR/checkpoint.pt
                     fairseq-validate MNIST --user-dir nq_plugin --task sequential_mnist
                       --path OUTDIR/checkpoint.pt
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from typing import List, Optional

import torch

from . import add_verbosity, configure_logging
from ..checkpoint import DIGEST_KEY, CheckpointError, load_checkpoint, model_config, seal
from ..files import OutputError, atomic_copy, write_error
from ..norm import FoldingNotSupported
from ..packed.format import FORMAT_NAME, PackedFormatError, quantization_config
from ..packed.io import save_packed

OUTPUTS = ("model.safetensors", "config.json", "dict.txt", "checkpoint.pt")


def build_parser():
    p = argparse.ArgumentParser(prog="nq-pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint of an nq_lstm_lm model (fairseq-train)")
    p.add_argument("outdir", help="directory for the packed model")
    p.add_argument("--dict", help="dict.txt of the training data (default: the one in the "
                                  "data directory recorded in the checkpoint)")
    p.add_argument("--force", action="store_true", help="overwrite a packed model in OUTDIR")
    return p


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
    from fairseq.data import Dictionary

    from ..models.loading import model_from_state
    from ..models.nq_lstm_lm_packed import PackedNQLSTMDecoder

    state = load_checkpoint(checkpoint)
    cfg = model_config(state)
    if cfg.get("_name", "").endswith("_packed"):
        raise CheckpointError(f"{checkpoint} is already packed")
    if "num_classes" in cfg:  # a sequence classifier (sequential MNIST): no dictionary
        from ..models.nq_lstm_classifier_packed import NQLSTMPackedClassifier
        check_outdir(outdir, [checkpoint], force)
        model = model_from_state(state, None, source=checkpoint)
        packed, packed_cfg = NQLSTMPackedClassifier.from_classifier(model, cfg)
        lstm, dict_path = model.lstm, None
    elif "one_hot_input" in cfg:
        dict_path = find_dictionary(state, dictionary)
        check_outdir(outdir, [checkpoint, dict_path], force)
        vocab = Dictionary.load(dict_path)
        try:
            decoder = model_from_state(state, vocab, source=checkpoint).decoder
        except CheckpointError as err:
            raise CheckpointError(f"{err} (with the dictionary {dict_path})") from None
        packed, packed_cfg = PackedNQLSTMDecoder.from_decoder(decoder, cfg, vocab)
        lstm = decoder.lstm
    else:
        raise CheckpointError(f"{checkpoint} is not a checkpoint of nq_lstm_lm or "
                              f"nq_lstm_classifier (model {cfg.get('_name')!r}); nq-pack exports "
                              "the plugin's models")
    metas, norm_steps = packed.lstm.metas, packed.lstm.norm_steps
    prefix = "decoder." if dict_path is not None else ""
    tensors = {prefix + k: v for k, v in packed.state_dict().items() if torch.is_tensor(v)}
    # weights outside the LSTM the checkpoint stored in fp16 (nq-zoo add --half-embeddings)
    # stay fp16: the model loads them into fp32 parameters, so the round trip is exact
    source = state.get("model") or {}
    half = sorted(k for k, v in tensors.items() if not k.startswith(prefix + "lstm.")
                  and torch.is_tensor(source.get(k)) and source[k].dtype == torch.float16
                  and v.is_floating_point())
    for k in half:
        tensors[k] = tensors[k].half()
    other = "fp32" if not half else "fp16: " + ", ".join(half) + "; the rest fp32"

    config = {"model": packed_cfg,
              "quantization_config": quantization_config(metas, norm_steps, other),
              "source_checkpoint": os.path.basename(checkpoint)}
    fairseq_state = {k: v for k, v in state.items() if k not in ("last_optimizer_state",)}
    fairseq_state["cfg"] = dict(state["cfg"], model=packed_cfg)
    fairseq_state["model"] = dict(tensors)
    if dict_path is not None:
        fairseq_state["model"]["decoder._extra_state"] = {"carried": {}}
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    add_verbosity(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        info = pack_checkpoint(args.checkpoint, args.outdir, args.dict, args.force)
    except (CheckpointError, PackedFormatError, FoldingNotSupported, FileNotFoundError,
            FileExistsError, shutil.SameFileError, OutputError) as err:
        print(f"nq-pack: {err}", file=sys.stderr)
        return 2
    print(f"packed {args.checkpoint} -> {info['outdir']}: LSTM weights "
          f"{info['lstm_weight_bytes']:,} bytes (fp32: {info['fp32_lstm_weight_bytes']:,}, "
          f"{info['ratio']:.1f}x smaller)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
