"""``nq-zoo add``, ``compact``, ``add-packed``, ``add-digest``, ``unbundle-packed`` (for
maintainers): argument parsing and printing over the library in nq_plugin/zoo/build.py."""
from __future__ import annotations

import json
import shlex

from ..storage import LOSSY_CHOICES
from ..zoo.build import (EntrySpec, add_digest, add_entry, add_packed, compact_entry,
                          unbundle_packed)
from ..zoo.manifest import ZooError
from ..zoo.text_formats import TEXT_FORMATS


def add_parser(sub) -> None:
    s = sub.add_parser("add", help="(maintainers) build a zoo entry from a training run")
    s.add_argument("name")
    s.add_argument("--checkpoint", required=True, help="the run's checkpoint_best.pt")
    s.add_argument("--data", required=True, help="binarized data folder with the test split")
    s.add_argument("--dataset", required=True, help="dataset name, e.g. ptb_char")
    s.add_argument("--repo-id", required=True, help="Hub repository the model is published as")
    s.add_argument("--metric", required=True, choices=["bpc", "perplexity", "accuracy"])
    s.add_argument("--eval-args", required=True,
                   help="fairseq-eval-lm / fairseq-validate options (quoted), e.g. "
                        "'--task bptt_lm --gen-subset test --tokens-per-sample 100 --cpu'")
    s.add_argument("--paper-metric", type=float, help="the paper's number for this row")
    s.add_argument("--paper-kb", type=float, help="the paper's LSTM size for this row")
    s.add_argument("--epochs", type=float, required=True, help="epochs trained")
    s.add_argument("--trained-on", required=True, help="hardware and where, for the card")
    s.add_argument("--train-command", required=True, help="the training command(s)")
    s.add_argument("--logs", nargs="+", default=[], help="training logs to bundle")
    s.add_argument("--eval-text", help="plain-text evaluation file to bundle")
    s.add_argument("--text-format", default="ptb_char", choices=sorted(TEXT_FORMATS))
    add_storage_options(s)
    s.add_argument("--no-packed", action="store_true", help="bundle no packed copy")
    s.add_argument("--notes", default="", help="limitations paragraph of the card")
    s.add_argument("--training-json",
                   help="what a resume needs, as JSON (schedule, epochs, lr, best_valid, run): "
                        "recorded in the manifest and shown on the card")
    s.add_argument("--unbundled-packed", action="store_true",
                   help="list the packed copy (for the Hub) but leave it out of the bundled "
                        "folder, as add-packed --unbundled does")
    s.add_argument("--checkpoint-eval-log",
                   help="a log of this checkpoint's test evaluation with --eval-args, as "
                        "written by nq_plugin.zoo.evaluate (the training campaign's): used as "
                        "the number before a lossy --floats instead of evaluating again")
    s.add_argument("--force", action="store_true", help="replace this model's zoo folder")
    s.set_defaults(func=cmd_add)
    s = sub.add_parser("compact", help="(maintainers) store a bundled model's model.pt "
                       "compactly (nq_plugin/storage.py), evaluate it again, rebuild its packed "
                       "copy and card")
    s.add_argument("name")
    s.add_argument("--data", required=True, help="binarized data folder with the test split")
    add_storage_options(s)
    s.set_defaults(func=cmd_compact)
    s = sub.add_parser("add-digest", help="(maintainers) write the tensor digest into a "
                       "bundled model made before checkpoints carried one")
    s.add_argument("name")
    s.set_defaults(func=cmd_add_digest)
    s = sub.add_parser("unbundle-packed", help="(maintainers) leave a model's packed copy "
                       "out of the repository (rebuilt byte-identical from model.pt on first "
                       "use)")
    s.add_argument("name")
    s.set_defaults(func=cmd_unbundle_packed)
    s = sub.add_parser("add-packed", help="(maintainers) bundle a packed copy of a zoo model")
    s.add_argument("name")
    s.add_argument("--data", required=True, help="the data folder the model is evaluated on")
    s.add_argument("--force", action="store_true", help="pack and evaluate it again")
    s.add_argument("--unbundled", action="store_true",
                   help="list the packed files (for the Hub) but leave them out of the bundled "
                        "copy: nq-zoo rebuilds them from model.pt on first use and checks them "
                        "against their sha256 (for models whose packed copy is too large to "
                        "bundle)")
    s.set_defaults(func=cmd_add_packed)


def add_storage_options(s) -> None:
    s.add_argument("--floats", default="fp32", choices=LOSSY_CHOICES,
                   help="encoding of the large floating-point tensors that are not quantized "
                        "weights (embedding, softmax, a full-precision LSTM): lossy, so the "
                        "test split is also evaluated before it and the card states both "
                        "(default fp32: kept)")
    s.add_argument("--no-compact", action="store_true",
                   help="keep the quantized LSTM's latent weights in fp32 (by default they are "
                        "stored in the smallest encoding that keeps their quantized weights "
                        "bit-identical: int8 per row, else bfloat16)")


def cmd_compact(args) -> int:
    entry = compact_entry(args.name, args.data, floats=args.floats,
                          compact=not args.no_compact)
    size = entry.file(entry.checkpoint).size
    print(f"{entry.name}: {entry.checkpoint} {size / 2**20:.2f} MiB, {entry.metric.name} "
          f"{entry.metric.value:.4f}")
    return 0


def cmd_add_digest(args) -> int:
    changed = add_digest(args.name)
    if not changed:
        print(f"{args.name}: its checkpoint carries its digest already")
    else:
        print(f"{args.name}: sealed {', '.join(changed)}")
    return 0


def cmd_unbundle_packed(args) -> int:
    left_out = unbundle_packed(args.name)
    if not left_out:
        print(f"{args.name}: its packed copy is not bundled already")
    else:
        print(f"{args.name}: packed/ left out of the bundle ({left_out} files listed, rebuilt "
              "byte-identical on first use)")
    return 0


def cmd_add_packed(args) -> int:
    note = add_packed(args.name, args.data, force=args.force, unbundled=args.unbundled)
    print(f"{args.name}: {note}")
    return 0


def cmd_add(args) -> int:
    training = None
    if args.training_json:
        try:
            training = json.loads(args.training_json)
        except json.JSONDecodeError as err:
            raise ZooError(f"--training-json is not valid JSON ({err})") from None
        if not isinstance(training, dict):
            raise ZooError("--training-json must be a JSON object, e.g. "
                           "'{\"schedule\": \"...\", \"epochs\": 12}'")
    spec = EntrySpec(
        name=args.name, checkpoint=args.checkpoint, data=args.data, dataset=args.dataset,
        repo_id=args.repo_id, metric=args.metric, eval_args=shlex.split(args.eval_args),
        epochs=args.epochs, trained_on=args.trained_on, train_command=args.train_command,
        paper_metric=args.paper_metric, paper_kb=args.paper_kb, logs=list(args.logs),
        eval_text=args.eval_text, text_format=args.text_format,
        floats=args.floats, compact=not args.no_compact, packed=not args.no_packed,
        unbundled_packed=args.unbundled_packed, notes=args.notes, training=training,
        force=args.force, checkpoint_eval=args.checkpoint_eval_log)
    entry = add_entry(spec)
    print(f"added {entry.name}: {entry.metric.name} {entry.metric.value:.4f} (paper "
          f"{entry.metric.paper}), LSTM {entry.sizes['lstm_kb']:.1f} KB, {len(entry.files)} "
          f"files in {entry.bundled}")
    return 0
