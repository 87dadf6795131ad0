"""``nq-zoo add``: build a zoo entry from a finished training run (for maintainers).

Writes ``zoo/models/NAME/`` in the layout of its Hub repository -- ``model.pt`` (the one root
``.pt``, optimizer state stripped), ``dict.txt``, ``packed/`` (``nq-pack``), ``logs/`` (the
training logs given and the evaluation log written here), ``eval/eval.txt`` (evaluation text
in plain English that we wrote, bundled because the treebank is licensed), ``README.md`` (the
card) -- runs the test-split evaluation itself (``fairseq-eval-lm`` / ``fairseq-validate``),
and records everything in the zoo's manifest. The folder is built beside its final place and
renamed into it; ``--force`` replaces only a folder the manifest already lists.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import tempfile

import torch

from ..checkpoint import load_checkpoint, model_config, seal
from ..files import atomic_copy, atomic_path, atomic_write_text, sha256_file
from ..zoo.manifest import Manifest, Metric, ZooEntry, ZooError, ZooFile, zoo_root

HALF_KEYS = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")


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
    s.add_argument("--text-format", default="ptb_char", choices=["ptb_char", "words"])
    s.add_argument("--half-embeddings", action="store_true",
                   help="store embedding and softmax weights in fp16 in model.pt (the "
                        "evaluation below measures the model as stored)")
    s.add_argument("--no-packed", action="store_true", help="bundle no packed copy")
    s.add_argument("--notes", default="", help="limitations paragraph of the card")
    s.add_argument("--training-json",
                   help="what a resume needs, as JSON (schedule, epochs, lr, best_valid, run): "
                        "recorded in the manifest and shown on the card")
    s.add_argument("--unbundled-packed", action="store_true",
                   help="list the packed copy (for the Hub) but leave it out of the bundled "
                        "folder, as add-packed --unbundled does")
    s.add_argument("--force", action="store_true", help="replace this model's zoo folder")
    s.set_defaults(func=cmd_add)
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


def _versions():
    import fairseq

    from .. import __version__
    return {"nq_plugin": __version__, "torch": torch.__version__,
            "fairseq": getattr(fairseq, "__version__", "?"), "python": platform.python_version()}


def pack_and_evaluate(folder: str, data: str, metric: str, eval_args) -> str:
    """nq-pack the folder's model.pt into packed/, evaluate the packed copy with the model's own
    evaluation (fairseq-eval-lm, or fairseq-validate for a classifier), keep the log in
    logs/eval_test_packed.log; returns the card's sentence about it."""
    from ..files import atomic_write_text
    from .pack import pack_checkpoint
    from .zoo import _run, _tool, parse_eval_lm, parse_validate, user_dir
    dict_path = os.path.join(folder, "dict.txt")
    lm = os.path.isfile(dict_path)
    pack_checkpoint(os.path.join(folder, "model.pt"), os.path.join(folder, "packed"),
                    dict_path if lm else None)
    tool = "fairseq-eval-lm" if lm else "fairseq-validate"
    out = _run([_tool(tool), data, "--user-dir", user_dir(), "--path",
                os.path.join(folder, "packed", "checkpoint.pt"), *eval_args])
    command = f"{tool} DATA_BIN --user-dir NQ_PLUGIN_DIR --path packed/checkpoint.pt " + \
        " ".join(eval_args)
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
    atomic_write_text(os.path.join(folder, "logs", "eval_test_packed.log"), f"$ {command}\n{out}")
    if not lm:
        value = f"{parse_validate(out):.2f}% accuracy"
    else:
        r = parse_eval_lm(out)
        value = f"{r['bits'] if metric == 'bpc' else r['perplexity']:.4f}"
    return (f"The bit-packed copy (`packed/`) measures {value} on the same split "
            f"(log: `logs/eval_test_packed.log`).")


def cmd_add_digest(args) -> int:
    """Seal a bundled model made before checkpoints carried a digest: model.pt gets the sha256
    of its tensors (which stay as they are, so the card's number stands), its packed copy is
    packed again from it, and the manifest's records of the changed files are updated."""
    from ..checkpoint import DIGEST_KEY
    from ..files import atomic_write_text
    from ..zoo.card import model_card
    from ..zoo.fetch import verify_folder
    from .pack import pack_checkpoint
    manifest = Manifest.load()
    entry = manifest.get(args.name)
    folder = os.path.join(zoo_root(), entry.bundled or "")
    if not entry.bundled or not os.path.isdir(folder):
        raise ZooError(f"{entry.name} is not bundled in this checkout")
    problems = verify_folder(entry, folder, bundled_copy=True)
    if problems:
        raise ZooError(f"{folder} does not match the manifest: {'; '.join(problems)}")
    model = os.path.join(folder, entry.checkpoint)
    state = load_checkpoint(model)
    if DIGEST_KEY in state["model"]:
        print(f"{entry.name}: {entry.checkpoint} carries its digest already")
        return 0
    seal(state)
    dict_path = os.path.join(folder, "dict.txt")
    packed_files = [f for f in entry.files if f.path.startswith("packed/")]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".digest.") as tmp:
        sealed = os.path.join(tmp, entry.checkpoint)
        torch.save(state, sealed)
        load_checkpoint(sealed)
        from ..models.loading import load_model
        load_model(sealed)  # the model's own load_state_dict verifies the digest
        if packed_files:
            pack_checkpoint(sealed, os.path.join(tmp, "packed"),
                            dict_path if os.path.isfile(dict_path) else None)
        made = {entry.checkpoint: sealed}
        made.update({f.path: os.path.join(tmp, "packed", *f.path[len("packed/"):].split("/"))
                     for f in packed_files})
        records = {}
        for rel, path in made.items():
            old = entry.file(rel)
            records[rel] = ZooFile(rel, sha256_file(path), os.path.getsize(path), old.bundled)
        for rel, path in made.items():  # into place: the bundled files only
            if records[rel].bundled:
                os.replace(path, os.path.join(folder, *rel.split("/")))
    entry.files = [records.get(f.path, f) for f in entry.files]
    manifest.put(entry)
    manifest.save()
    atomic_write_text(os.path.join(folder, "README.md"), str(model_card(entry)))
    print(f"{entry.name}: sealed {', '.join(sorted(made))}")
    return 0


def cmd_unbundle_packed(args) -> int:
    """Leave a bundled model's packed copy out of the repository (listed for the Hub, rebuilt
    from model.pt on first use): only after nq-pack rebuilds exactly the listed bytes, so what
    a user rebuilds is what the card measured."""
    from ..files import atomic_write_text
    from ..zoo.card import model_card
    from ..zoo.derive import _mismatches
    from .pack import pack_checkpoint
    manifest = Manifest.load()
    entry = manifest.get(args.name)
    folder = os.path.join(zoo_root(), entry.bundled or "")
    packed = [f for f in entry.files if f.path.startswith("packed/")]
    if not packed:
        raise ZooError(f"{entry.name} has no packed copy")
    if all(not f.bundled for f in packed):
        print(f"{entry.name}: its packed copy is not bundled already")
        return 0
    dict_path = os.path.join(folder, "dict.txt")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".unbundle.") as tmp:
        pack_checkpoint(os.path.join(folder, entry.checkpoint), os.path.join(tmp, "packed"),
                        dict_path if os.path.isfile(dict_path) else None)
        problems = _mismatches(entry, os.path.join(tmp, "packed"))
    if problems:
        raise ZooError(f"{entry.name}: nq-pack does not rebuild the listed packed copy "
                       f"({'; '.join(problems)}); keep it bundled, or pack and measure it again "
                       "(add-packed --force --unbundled)")
    for f in packed:
        f.bundled = False
    manifest.put(entry)
    manifest.save()
    shutil.rmtree(os.path.join(folder, "packed"), ignore_errors=True)
    atomic_write_text(os.path.join(folder, "README.md"), str(model_card(entry)))
    print(f"{entry.name}: packed/ left out of the bundle ({len(packed)} files listed, rebuilt "
          "byte-identical on first use)")
    return 0


def cmd_add_packed(args) -> int:
    """Bundle a packed copy of a zoo model that has none (packed, evaluated, listed, carded)."""
    from ..files import atomic_write_text, sha256_file
    from ..zoo.card import model_card
    manifest = Manifest.load()
    entry = manifest.get(args.name)
    if not entry.bundled:
        raise ZooError(f"{entry.name} is not bundled in this checkout")
    folder = os.path.join(zoo_root(), entry.bundled)
    if any(f.path.startswith("packed/") for f in entry.files) and not args.force:
        raise ZooError(f"{entry.name} has a packed copy already; --force packs it again")
    if os.path.exists(os.path.join(folder, "packed")) and not args.force:
        raise ZooError(f"{folder}/packed exists but the manifest does not list it; remove it or "
                       "pass --force")
    note = pack_and_evaluate(folder, args.data, entry.metric.name, entry.metric.eval_args)
    written = ["logs/eval_test_packed.log"] + sorted(
        f"packed/{n}" for n in os.listdir(os.path.join(folder, "packed")))
    files = {f.path: f for f in entry.files}
    for rel in written:
        path = os.path.join(folder, rel)
        files[rel] = ZooFile(rel, sha256_file(path), os.path.getsize(path),
                             bundled=not (args.unbundled and rel.startswith("packed/")))
    entry.files = [files[k] for k in sorted(files)]
    entry.notes = (entry.notes + "\n\n" + note).strip()
    manifest.put(entry)
    manifest.save()
    if args.unbundled:  # listed with their sha256; the bundle leaves them out
        shutil.rmtree(os.path.join(folder, "packed"))
    atomic_write_text(os.path.join(folder, "README.md"), str(model_card(entry)))
    print(f"{entry.name}: {note}")
    return 0


def cmd_add(args) -> int:
    from ..models.loading import model_from_state
    from ..norm import normalization_class
    from ..sizes import summary
    from ..packed.format import FORMAT_VERSION
    from ..zoo.card import model_card
    from .zoo import _run, _tool, parse_eval_lm, parse_validate, user_dir

    manifest = Manifest.load()
    final = os.path.join(zoo_root(), "models", args.name)
    if os.path.exists(final):
        listed = args.name in manifest.models and manifest.models[args.name].bundled == \
            f"models/{args.name}"
        if not (args.force and listed):
            raise ZooError(f"{final} exists; pass --force to rebuild a model the manifest lists "
                           "(nothing else is overwritten)")
    training = None
    if args.training_json:
        try:
            training = json.loads(args.training_json)
        except json.JSONDecodeError as err:
            raise ZooError(f"--training-json is not valid JSON ({err})") from None
        if not isinstance(training, dict):
            raise ZooError("--training-json must be a JSON object, e.g. "
                           "'{\"schedule\": \"...\", \"epochs\": 12}'")
    state = load_checkpoint(args.checkpoint)
    cfg = model_config(state)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{args.name}.", dir=os.path.dirname(final))
    try:
        state["last_optimizer_state"] = None
        if args.half_embeddings:
            for k in HALF_KEYS:
                if k in state["model"]:
                    state["model"][k] = state["model"][k].half()
        seal(state)  # the digest of its tensors, verified by the model's load_state_dict
        with atomic_path(os.path.join(tmp, "model.pt")) as p:
            torch.save(state, p)
        has_dict = os.path.isfile(os.path.join(args.data, "dict.txt"))  # none for sMNIST
        if has_dict:
            atomic_copy(os.path.join(args.data, "dict.txt"), os.path.join(tmp, "dict.txt"))
        os.makedirs(os.path.join(tmp, "logs"))
        for log in args.logs:
            atomic_copy(log, os.path.join(tmp, "logs", os.path.basename(log)))
        if args.eval_text:
            atomic_copy(args.eval_text, os.path.join(tmp, "eval", "eval.txt"))
        lm = "one_hot_input" in cfg
        eval_args = shlex.split(args.eval_args)
        tool = "fairseq-eval-lm" if lm else "fairseq-validate"
        command = (f"{tool} DATA_BIN --user-dir NQ_PLUGIN_DIR --path model.pt "
                   + " ".join(eval_args))
        out = _run([_tool(tool), args.data, "--user-dir", user_dir(), "--path",
                    os.path.join(tmp, "model.pt"), *eval_args])
        atomic_write_text(os.path.join(tmp, "logs", "eval_test.log"), f"$ {command}\n{out}")
        value = parse_validate(out) if not lm else (
            parse_eval_lm(out)["bits"] if args.metric == "bpc" else
            parse_eval_lm(out)["perplexity"])
        notes = args.notes
        if not args.no_packed:
            notes += "\n\n" + pack_and_evaluate(tmp, args.data, args.metric, eval_args)
        sizes = summary(model_from_state(state, source=args.checkpoint), print_fn=None)
        sizes = {k: sizes[k] for k in ("lstm_kb", "lstm_fp32_kb", "compression", "other_kb",
                                       "total_kb", "total_fp32_kb") if k in sizes}
        sizes.setdefault("total_kb", sizes["lstm_kb"])
        sizes.setdefault("total_fp32_kb", sizes["lstm_fp32_kb"])
        sizes["paper_kb"] = args.paper_kb
        norm_options = {k: cfg[k] for k in normalization_class(str(cfg.get("norm")))
                        .inference_options if k in cfg}
        files = []
        for root, _, names in os.walk(tmp):
            for n in sorted(names):
                path = os.path.join(root, n)
                rel = os.path.relpath(path, tmp).replace(os.sep, "/")
                if rel != "README.md":
                    files.append(ZooFile(rel, sha256_file(path), os.path.getsize(path),
                                         bundled=not (args.unbundled_packed
                                                      and rel.startswith("packed/"))))
        files.sort(key=lambda f: f.path)
        if args.unbundled_packed and os.path.isdir(os.path.join(tmp, "packed")):
            shutil.rmtree(os.path.join(tmp, "packed"))  # listed with their sha256, rebuilt
        entry = ZooEntry(
            name=args.name, repo_id=args.repo_id, revision=None,
            task=str(state["cfg"]["task"]["_name"]), arch=str(cfg.get("_name")),
            quantizer=str(cfg.get("quantizer")), norm=str(cfg.get("norm")),
            norm_options=norm_options, dataset=args.dataset,
            metric=Metric(args.metric, round(value, 4), "test", command,
                          "logs/eval_test.log", args.paper_metric, eval_args),
            sizes=sizes, epochs=args.epochs, trained_on=args.trained_on,
            train_command=args.train_command, files=files,
            dictionary_sha256=sha256_file(os.path.join(tmp, "dict.txt")) if has_dict else None,
            format_version=FORMAT_VERSION, versions=_versions(),
            bundled=f"models/{args.name}", eval_text="eval/eval.txt" if args.eval_text else None,
            text_format=args.text_format, notes=notes.strip(), training=training)
        atomic_write_text(os.path.join(tmp, "README.md"), str(model_card(entry)))
        if os.path.exists(final):
            old = final + ".old"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        manifest.put(entry)
        manifest.save()
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    print(f"added {args.name}: {args.metric} {value:.4f} (paper {args.paper_metric}), LSTM "
          f"{sizes['lstm_kb']:.1f} KB, {len(files)} files in {final}")
    return 0
