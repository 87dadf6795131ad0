"""``nq-summary``: model size as Hou et al. (NeurIPS 2019) count it.

    nq-summary CHECKPOINT [--json]
    nq-summary --input-size 50 --hidden-size 512 --layers 1 --quantizer bc --norm layer \
        [--bn-stats separate --bn-max-steps 100] [--no-quantize-input] [--json]

The spec options are generated from :class:`nq_plugin.nn.options.LSTMOptions` (the one
declaration of the LSTM's options).
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from typing import List, Optional

import torch
from torch import nn

from . import add_verbosity, configure_logging
from ..checkpoint import CheckpointError, load_checkpoint, model_config
from ..nn import NQLSTM
from ..nn.options import LSTMOptions
from ..norm.options import field_choices
from ..sizes import summary


def _arg_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


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
    hints = typing.get_type_hints(LSTMOptions)
    for f in LSTMOptions.field_list():
        choices = field_choices(f)
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default,
                       type=_arg_type(hints[f.name]),
                       choices=list(choices) if choices else None, help=f.metadata["help"])
    p.add_argument("--no-quantize-input", action="store_true",
                   help="keep W_x full precision (scalar inputs, e.g. sequential MNIST)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def model_from_spec(args) -> NQLSTM:
    missing = [n for n in ("input_size", "hidden_size") if getattr(args, n) is None]
    if missing:
        raise SystemExit("nq-summary: give a CHECKPOINT, or a spec with "
                         + " and ".join("--" + m.replace("_", "-") for m in missing))
    options = LSTMOptions.from_config(args).as_kwargs()
    with torch.device("meta"):  # sizes only: allocate nothing
        return NQLSTM(args.input_size, args.hidden_size, args.layers,
                      quantize_input=not args.no_quantize_input, **options)


def model_from_checkpoint(path: str) -> nn.Module:
    """The checkpoint's model (no data directory needed), for the size summary."""
    from ..models.loading import model_from_state
    state = load_checkpoint(path)
    if str(model_config(state).get("_name", "")).endswith("_packed"):
        raise CheckpointError(f"{path} is a packed model written by nq-pack (it reports the packed "
                              "sizes); run nq-summary on the checkpoint it was packed from")
    return model_from_state(state, source=path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    add_verbosity(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
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
