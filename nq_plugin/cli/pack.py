"""``nq-pack CHECKPOINT OUTDIR``: export a trained checkpoint of ``nq_lstm_lm`` or
``nq_lstm_classifier`` to the bit-packed format (the library: nq_plugin/packed/export.py).

Writes into OUTDIR (which must not hold a packed model already, unless --force):
  model.safetensors, config.json, dict.txt (language models), and checkpoint.pt, a fairseq
  checkpoint of the packed model:
      fairseq-eval-lm DATA --user-dir nq_plugin --task bptt_lm --path OUTDIR/checkpoint.pt
      fairseq-validate MNIST --user-dir nq_plugin --task sequential_mnist --path OUTDIR/checkpoint.pt
"""
import argparse
import shutil
import sys
from typing import List, Optional

from . import add_verbosity, configure_logging
from ..checkpoint import CheckpointError
from ..files import OutputError
from ..norm import FoldingNotSupported
from ..packed.export import pack_checkpoint
from ..packed.format import PackedFormatError


def build_parser():
    p = argparse.ArgumentParser(prog="nq-pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint of an nq_lstm_lm model (fairseq-train)")
    p.add_argument("outdir", help="directory for the packed model")
    p.add_argument("--dict", help="dict.txt of the training data (default: the one in the "
                                  "data directory recorded in the checkpoint)")
    p.add_argument("--force", action="store_true", help="overwrite a packed model in OUTDIR")
    return p


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
