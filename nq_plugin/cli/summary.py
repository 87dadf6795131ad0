"""``nq-summary``: model size as Hou et al. (NeurIPS 2019) count it.

    nq-summary CHECKPOINT [--json]
    nq-summary --input-size 50 --hidden-size 512 --layers 1 --quantizer bc --norm layer \
        [--bn-stats separate --bn-max-steps 100] [--no-quantize-input] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint, model_config
from ..norm import NORMALIZATIONS
from ..nn import NQLSTM
from ..quant import QUANTIZERS
from ..sizes import summary


LSTM_OPTIONS = ("quantizer", "norm", "bn_stats", "bn_max_steps", "bn_gain", "layer_norm_gain",
                "pn_alpha", "pn_alpha_backward", "pn_warmup", "latent_clip")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nq-summary",
        description="Size of a normalized, quantized LSTM, counted as the paper counts it "
                    "(LSTM layers only; embeddings and softmax listed separately).")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint trained with nq_plugin")
    p.add_argument("--input-size", type=int, help="input features of the first layer "
                   "(vocabulary size for one-hot char models, embedding size otherwise)")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--quantizer", default="fp", choices=sorted(QUANTIZERS))
    p.add_argument("--norm", default="none", choices=sorted(NORMALIZATIONS))
    p.add_argument("--bn-stats", default="shared", choices=["shared", "separate"])
    p.add_argument("--bn-max-steps", type=int, default=100,
                   help="time steps with their own batch-norm statistics (T_max)")
    p.add_argument("--no-quantize-input", action="store_true",
                   help="keep W_x full precision (scalar inputs, e.g. sequential MNIST)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def model_from_spec(args) -> NQLSTM:
    missing = [n for n in ("input_size", "hidden_size") if getattr(args, n) is None]
    if missing:
        raise SystemExit("nq-summary: give a CHECKPOINT, or a spec with "
                         + " and ".join("--" + m.replace("_", "-") for m in missing))
    with torch.device("meta"):  # sizes only: allocate nothing
        return NQLSTM(args.input_size, args.hidden_size, args.layers, quantizer=args.quantizer,
                      norm=args.norm, quantize_input=not args.no_quantize_input,
                      bn_stats=args.bn_stats, bn_max_steps=args.bn_max_steps)


def model_from_checkpoint(path: str) -> nn.Module:
    """Rebuild a checkpoint's NQLSTM (from its config and weights) plus its other parameters
    (embeddings, softmax), enough for the size summary; needs no data directory."""
    state = load_checkpoint(path)
    cfg = model_config(state)
    weights = state["model"]
    keys = [k for k in weights if k.endswith("layers.0.weight_hh")]
    if str(cfg.get("_name", "")).endswith("_packed"):
        raise CheckpointError(f"{path} is a packed model written by nq-pack (it reports the packed "
                              "sizes); run nq-summary on the checkpoint it was packed from")
    if not keys:
        raise CheckpointError(f"{path} holds no NQLSTM layer: not a checkpoint of nq_plugin")
    prefix = keys[0][: -len("layers.0.weight_hh")]
    lstm_state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    num_layers = sum(1 for k in lstm_state if k.endswith(".weight_hh"))
    options = {name: cfg[name] for name in LSTM_OPTIONS if cfg.get(name) is not None}
    lstm = NQLSTM(lstm_state["layers.0.weight_ih"].shape[1],
                  lstm_state["layers.0.weight_hh"].shape[1], num_layers,
                  quantize_input=cfg.get("quantize_input", True), **options)
    try:
        lstm.load_state_dict(lstm_state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the LSTM weights do not match its configuration: "
                              f"{err}") from None
    model = nn.Module()
    model.lstm = lstm
    seen = {t.data_ptr() for t in lstm_state.values() if torch.is_tensor(t)}
    for key, value in weights.items():
        if (key.startswith(prefix) or not torch.is_tensor(value)
                or not value.is_floating_point() or value.data_ptr() in seen):
            continue
        seen.add(value.data_ptr())
        model.register_parameter(key.replace(".", "_"), nn.Parameter(value, requires_grad=False))
    return model


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.checkpoint:
            model = model_from_checkpoint(args.checkpoint)
        else:
            model = model_from_spec(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"nq-summary: {err}", file=sys.stderr)
        return 2
    result = summary(model, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
