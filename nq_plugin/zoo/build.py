"""Building the zoo (for maintainers): an entry from a finished training run, and the changes to
a bundled entry's files -- the library behind ``nq-zoo add``, ``add-packed``, ``add-digest`` and
``unbundle-packed`` (nq_plugin/cli/zoo_add.py) and the training campaign.

:func:`add_entry` writes ``zoo/models/NAME/`` in the layout of its Hub repository --
``model.pt`` (the one root ``.pt``, optimizer state stripped, sealed with its tensor digest),
``dict.txt``, ``packed/`` (``nq-pack``), ``logs/`` (the training logs given and the evaluation
log written here), ``eval/eval.txt`` (evaluation text in plain English that we wrote, bundled
because the treebank is licensed), ``README.md`` (the card) -- runs the test-split evaluation
itself (``fairseq-eval-lm`` / ``fairseq-validate``, as the model's class says), and records
everything in the zoo's manifest. The folder is built beside its final place and renamed into
it; ``force`` replaces only a folder the manifest already lists.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from ..checkpoint import DIGEST_KEY, load_checkpoint, model_config, seal
from ..files import atomic_copy, atomic_path, atomic_write_text, sha256_file, temporary_folder
from ..storage import encode_state, encoding, quantized_digest, storage_plan
from .card import model_card
from .derive import pack_entry, rebuild_problems
from .evaluate import Evaluation, evaluate_checkpoint, parse_eval_lm, parse_validate
from .fetch import verify_folder
from .manifest import Manifest, Metric, ZooEntry, ZooError, ZooFile, zoo_root

PACKED = "packed/"


@dataclass
class EntrySpec:
    """What :func:`add_entry` needs: the run's checkpoint and data, how the entry is evaluated
    and described (the options of ``nq-zoo add``)."""
    name: str
    checkpoint: str
    data: str
    dataset: str
    repo_id: str
    metric: str                      # bpc | perplexity | accuracy
    eval_args: Sequence[str]
    epochs: float
    trained_on: str
    train_command: str
    paper_metric: Optional[float] = None
    paper_kb: Optional[float] = None
    logs: List[str] = field(default_factory=list)
    eval_text: Optional[str] = None
    text_format: str = "ptb_char"
    floats: str = "fp32"             # the lossy encoding of other large float tensors
    compact: bool = True             # quantized weights' latents in an exact compact encoding
    packed: bool = True
    unbundled_packed: bool = False
    notes: str = ""
    training: Optional[dict] = None
    force: bool = False
    checkpoint_eval: Optional[str] = None  # a log of ``checkpoint``'s test evaluation (with
    #                                        eval_args) already made: not run again


def _bundled(manifest: Manifest, name: str):
    entry = manifest.get(name)
    folder = os.path.join(zoo_root(), entry.bundled or "")
    if not entry.bundled or not os.path.isdir(folder):
        raise ZooError(f"{entry.name} is not bundled in this checkout")
    return entry, folder


def _versions():
    import fairseq

    from .. import __version__
    return {"nq_plugin": __version__, "torch": torch.__version__,
            "fairseq": getattr(fairseq, "__version__", "?"), "python": platform.python_version()}




def _evaluation_tool(checkpoint: str) -> str:
    from ..models.loading import model_class
    return model_class(load_checkpoint(checkpoint), checkpoint).evaluation_tool


def pack_and_evaluate(folder: str, data: str, metric: str, eval_args) -> str:
    """nq-pack the folder's model.pt into packed/, evaluate the packed copy with the model's own
    evaluation (fairseq-eval-lm, or fairseq-validate for a classifier), keep the log in
    logs/eval_test_packed.log; returns the card's sentence about it."""
    model = os.path.join(folder, "model.pt")
    dict_path = os.path.join(folder, "dict.txt")
    from ..packed.export import pack_checkpoint
    pack_checkpoint(model, os.path.join(folder, "packed"),
                    dict_path if os.path.isfile(dict_path) else None)
    packed = os.path.join(folder, "packed", "checkpoint.pt")
    r = evaluate_checkpoint(packed, data, metric, eval_args, _evaluation_tool(packed),
                            shown_path="packed/checkpoint.pt")
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
    atomic_write_text(os.path.join(folder, "logs", "eval_test_packed.log"), r.log)
    value = f"{r.value:.2f}% accuracy" if metric == "accuracy" else f"{r.value:.4f}"
    return (f"The bit-packed copy (`packed/`) measures {value} on the same split "
            f"(log: `logs/eval_test_packed.log`).")


def add_digest(name: str) -> List[str]:
    """Seal a bundled model made before checkpoints carried a digest: model.pt gets the sha256
    of its tensors (which stay as they are, so the card's number stands), its packed copy is
    packed again from it, and the manifest's records of the changed files are updated. Returns
    the files changed (none: it carried its digest already)."""
    manifest = Manifest.load()
    entry, folder = _bundled(manifest, name)
    problems = verify_folder(entry, folder, bundled_copy=True)
    if problems:
        raise ZooError(f"{folder} does not match the manifest: {'; '.join(problems)}")
    state = load_checkpoint(os.path.join(folder, entry.checkpoint))
    if DIGEST_KEY in state["model"]:
        return []
    seal(state)
    packed_files = [f for f in entry.files if f.path.startswith(PACKED)]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".digest.") as tmp:
        sealed = os.path.join(tmp, entry.checkpoint)
        torch.save(state, sealed)
        from ..models.loading import load_model
        load_model(sealed)  # the model's own load_state_dict verifies the digest
        if packed_files:
            pack_entry(entry, folder, os.path.join(tmp, "packed"), checkpoint=sealed)
        made = {entry.checkpoint: sealed}
        made.update({f.path: os.path.join(tmp, "packed", *f.path[len(PACKED):].split("/"))
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
    return sorted(made)


def unbundle_packed(name: str) -> int:
    """Leave a bundled model's packed copy out of the repository (listed for the Hub, rebuilt
    from model.pt on first use): only after nq-pack rebuilds exactly the listed bytes, so what
    a user rebuilds is what the card measured. Returns the number of files left out (0: they
    were out already)."""
    manifest = Manifest.load()
    entry = manifest.get(name)
    folder = os.path.join(zoo_root(), entry.bundled or "")
    packed = [f for f in entry.files if f.path.startswith(PACKED)]
    if not packed:
        raise ZooError(f"{entry.name} has no packed copy")
    if all(not f.bundled for f in packed):
        return 0
    with tempfile.TemporaryDirectory(dir=folder, prefix=".unbundle.") as tmp:
        problems = rebuild_problems(entry, folder, os.path.join(tmp, "packed"))
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
    return len(packed)


def add_packed(name: str, data: str, force: bool = False, unbundled: bool = False) -> str:
    """Bundle a packed copy of a zoo model that has none (packed, evaluated, listed, carded);
    returns the card's sentence on it."""
    manifest = Manifest.load()
    entry, folder = _bundled(manifest, name)
    if any(f.path.startswith(PACKED) for f in entry.files) and not force:
        raise ZooError(f"{entry.name} has a packed copy already; --force packs it again")
    if os.path.exists(os.path.join(folder, "packed")) and not force:
        raise ZooError(f"{folder}/packed exists but the manifest does not list it; remove it or "
                       "pass --force")
    note = pack_and_evaluate(folder, data, entry.metric.name, entry.metric.eval_args)
    written = ["logs/eval_test_packed.log"] + sorted(
        f"packed/{n}" for n in os.listdir(os.path.join(folder, "packed")))
    files = {f.path: f for f in entry.files}
    for rel in written:
        path = os.path.join(folder, rel)
        files[rel] = ZooFile(rel, sha256_file(path), os.path.getsize(path),
                             bundled=not (unbundled and rel.startswith(PACKED)))
    entry.files = [files[k] for k in sorted(files)]
    entry.notes = (entry.notes + "\n\n" + note).strip()
    manifest.put(entry)
    manifest.save()
    if unbundled:  # listed with their sha256; the bundle leaves them out
        shutil.rmtree(os.path.join(folder, "packed"))
    atomic_write_text(os.path.join(folder, "README.md"), str(model_card(entry)))
    return note


def storage_sentence(storage: dict, metric: str, stored_value: float) -> str:
    """The card's sentence on how model.pt stores its tensors (``storage``: the manifest's
    record) and, for a lossy encoding, what it cost."""
    def fmt(v):
        return f"{v:.2f}%" if metric == "accuracy" else f"{v:.4f}" if metric == "bpc" \
            else f"{v:.2f}"
    parts = []
    for enc, names in sorted(storage["exact"].items()):
        parts.append(f"the latent weights of the quantized LSTM ({len(names)} tensors) in "
                     f"{encoding(enc).words}, exact for evaluation (their quantized weights equal "
                     "those of the trained fp32 latents bit for bit; sha256 in the manifest)")
    for enc, names in sorted(storage["lossy"].items()):
        short = ", ".join(n.rsplit(".", 2)[-2] if n.endswith(".weight") else n for n in names)
        parts.append(f"{short} in {encoding(enc).words} (lossy: {metric} "
                     f"{fmt(storage['uncompacted_metric'])} before, {fmt(stored_value)} as stored; "
                     "`logs/eval_test_uncompacted.log`)")
    if not parts:
        return "`model.pt` stores every tensor in fp32."
    return "`model.pt` stores " + "; ".join(parts) + "; everything else in fp32."


def checkpoint_evaluation(spec: EntrySpec, tool_name: str) -> Evaluation:
    """The test evaluation of ``spec.checkpoint`` as trained: read from ``spec.checkpoint_eval``
    (the log an :class:`Evaluation` writes, with the entry's options) when given, else run."""
    if spec.checkpoint_eval is None:
        return evaluate_checkpoint(spec.checkpoint, spec.data, spec.metric, spec.eval_args,
                                   tool_name)
    with open(spec.checkpoint_eval) as f:
        command, _, output = f.read().partition("\n")
    if not command.startswith(f"$ {tool_name} ") or \
            not command.endswith(" ".join(spec.eval_args)):
        raise ZooError(f"{spec.checkpoint_eval} is not a {tool_name} log made with the entry's "
                       f"options ({' '.join(spec.eval_args)}); leave --checkpoint-eval-log out "
                       "to evaluate the checkpoint here")
    value = parse_validate(output) if spec.metric == "accuracy" else \
        parse_eval_lm(output)["bits" if spec.metric == "bpc" else "perplexity"]
    return Evaluation(value, command[2:], output)


def stored_state(trained: torch.nn.Module, floats: str,
                 exact: Sequence[str] = ("int8_rows", "bfloat16")):
    """``trained``'s state as a zoo entry stores it, and the plan that encoded it: a language
    model's carried (h, c) dropped (truncated BPTT's, a resume's state, not the model's), every
    tensor encoded as :func:`nq_plugin.storage.storage_plan` says (``floats``, ``exact``)."""
    reset = getattr(trained, "reset_carried_state", None)
    if reset is not None:
        reset()
    plan = storage_plan(trained, floats, tuple(exact))
    return encode_state(dict(trained.state_dict()), plan.stored), plan


def add_entry(spec: EntrySpec) -> ZooEntry:
    """Build the zoo entry ``spec.name`` from a training run (see the module doc); returns the
    entry as the manifest now records it."""
    from ..models.loading import model_class, model_from_state
    from ..norm import normalization_class
    from ..packed.format import FORMAT_VERSION
    from ..sizes import summary

    manifest = Manifest.load()
    final = os.path.join(zoo_root(), "models", spec.name)
    if os.path.exists(final):
        listed = spec.name in manifest.models and manifest.models[spec.name].bundled == \
            f"models/{spec.name}"
        if not (spec.force and listed):
            raise ZooError(f"{final} exists; pass --force to rebuild a model the manifest lists "
                           "(nothing else is overwritten)")
    if spec.training is not None and not isinstance(spec.training, dict):
        raise ZooError("the training record must be a JSON object, e.g. "
                       "'{\"schedule\": \"...\", \"epochs\": 12}'")
    state = load_checkpoint(spec.checkpoint)
    cfg = model_config(state)
    cls = model_class(state, spec.checkpoint)
    has_dict = cls.dictionary_tensor is not None
    if has_dict and not os.path.isfile(os.path.join(spec.data, "dict.txt")):
        raise ZooError(f"{spec.data} has no dict.txt: give the binarized data folder the model "
                       "was trained on")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = temporary_folder(os.path.dirname(final), f".{spec.name}.")
    try:
        state["last_optimizer_state"] = None
        trained = model_from_state(state, source=spec.checkpoint)
        state["model"], plan = stored_state(trained, spec.floats, ("int8_rows", "bfloat16")
                                            if spec.compact else ())
        seal(state)  # the digest of its tensors, verified by the model's load_state_dict
        with atomic_path(os.path.join(tmp, "model.pt")) as p, open(p, "wb") as f:
            torch.save(state, f)  # a file object: the archive's name is not the temporary one
        if has_dict:
            atomic_copy(os.path.join(spec.data, "dict.txt"), os.path.join(tmp, "dict.txt"))
        os.makedirs(os.path.join(tmp, "logs"))
        for log in spec.logs:
            atomic_copy(log, os.path.join(tmp, "logs", os.path.basename(log)))
        if spec.eval_text:
            atomic_copy(spec.eval_text, os.path.join(tmp, "eval", "eval.txt"))
        eval_args = list(spec.eval_args)
        r = evaluate_checkpoint(os.path.join(tmp, "model.pt"), spec.data, spec.metric,
                                eval_args, cls.evaluation_tool)
        atomic_write_text(os.path.join(tmp, "logs", "eval_test.log"), r.log)
        storage = plan.record()
        if plan.exact:  # the trained quantized weights, which the stored latents reproduce
            storage["quantized_sha256"] = quantized_digest(trained, plan.exact)
        if plan.lossy:  # the cost of the lossy encoding, measured
            before = checkpoint_evaluation(spec, cls.evaluation_tool)
            storage["uncompacted_metric"] = round(before.value, 4)
            atomic_write_text(os.path.join(tmp, "logs", "eval_test_uncompacted.log"),
                              before.log)
        notes = (spec.notes + "\n\n" + storage_sentence(storage, spec.metric, r.value)).strip()
        if spec.packed:
            notes += "\n\n" + pack_and_evaluate(tmp, spec.data, spec.metric, eval_args)
        sizes = summary(trained, print_fn=None)
        sizes = {k: sizes[k] for k in ("lstm_kb", "lstm_fp32_kb", "compression", "other_kb",
                                       "total_kb", "total_fp32_kb") if k in sizes}
        sizes.setdefault("total_kb", sizes["lstm_kb"])
        sizes.setdefault("total_fp32_kb", sizes["lstm_fp32_kb"])
        sizes["paper_kb"] = spec.paper_kb
        norm_options = {k: cfg[k] for k in normalization_class(str(cfg.get("norm")))
                        .inference_options if k in cfg}
        files = []
        for root, _, names in os.walk(tmp):
            for n in sorted(names):
                path = os.path.join(root, n)
                rel = os.path.relpath(path, tmp).replace(os.sep, "/")
                if rel != "README.md":
                    files.append(ZooFile(rel, sha256_file(path), os.path.getsize(path),
                                         bundled=not (spec.unbundled_packed
                                                      and rel.startswith(PACKED))))
        files.sort(key=lambda f: f.path)
        if spec.unbundled_packed and os.path.isdir(os.path.join(tmp, "packed")):
            shutil.rmtree(os.path.join(tmp, "packed"))  # listed with their sha256, rebuilt
        entry = ZooEntry(
            name=spec.name, repo_id=spec.repo_id, revision=None,
            task=str(state["cfg"]["task"]["_name"]), arch=str(cfg.get("_name")),
            quantizer=str(cfg.get("quantizer")), norm=str(cfg.get("norm")),
            norm_options=norm_options, dataset=spec.dataset,
            metric=Metric(spec.metric, round(r.value, 4), "test", r.command,
                          "logs/eval_test.log", spec.paper_metric, eval_args),
            sizes=sizes, epochs=spec.epochs, trained_on=spec.trained_on,
            train_command=spec.train_command, files=files,
            dictionary_sha256=sha256_file(os.path.join(tmp, "dict.txt")) if has_dict else None,
            format_version=FORMAT_VERSION, versions=_versions(),
            bundled=f"models/{spec.name}", eval_text="eval/eval.txt" if spec.eval_text else None,
            text_format=spec.text_format, notes=notes.strip(), training=spec.training,
            storage=storage)
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
    return entry


GENERATED_LOGS = ("eval_test.log", "eval_test_packed.log", "eval_test_uncompacted.log")
GENERATED_NOTES = ("The bit-packed copy (`packed/`) measures", "`model.pt` stores")


def compact_entry(name: str, data: str, floats: str = "fp32", compact: bool = True) -> ZooEntry:
    """Rebuild the bundled entry ``name`` from its own verified files with the storage options
    (:func:`add_entry` on its model.pt, logs, evaluation text and records): the test split is
    evaluated again (``data``), the packed copy rebuilt and measured, the card rewritten; the
    training record, logs and card notes are kept (less the sentences this rebuild writes)."""
    manifest = Manifest.load()
    entry, folder = _bundled(manifest, name)
    problems = verify_folder(entry, folder, bundled_copy=True)
    if problems:
        raise ZooError(f"{folder} does not match the manifest: {'; '.join(problems)}")
    with tempfile.TemporaryDirectory(prefix=f".{name}.compact.",
                                     dir=os.path.dirname(folder)) as tmp:
        for rel in [f.path for f in entry.files if f.bundled] + ["README.md"]:
            os.makedirs(os.path.dirname(os.path.join(tmp, *rel.split("/"))), exist_ok=True)
            atomic_copy(os.path.join(folder, *rel.split("/")), os.path.join(tmp, *rel.split("/")))
        logs = sorted(os.path.join(tmp, "logs", n) for n in os.listdir(os.path.join(tmp, "logs"))
                      if n not in GENERATED_LOGS)
        notes = "\n\n".join(p for p in entry.notes.split("\n\n")
                             if not p.startswith(GENERATED_NOTES))
        packed = [f for f in entry.files if f.path.startswith(PACKED)]
        # a bundle already stored lossily: its model.pt is not the trained model, whose test
        # evaluation (the "before" of the card's storage sentence) is kept from the bundle
        trained_log = os.path.join(tmp, "logs", "eval_test_uncompacted.log")
        already_lossy = bool((entry.storage or {}).get("lossy")) and os.path.isfile(trained_log)
        spec = EntrySpec(
            name=name, checkpoint=os.path.join(tmp, entry.checkpoint), data=data,
            dataset=entry.dataset, repo_id=entry.repo_id, metric=entry.metric.name,
            eval_args=list(entry.metric.eval_args), epochs=entry.epochs,
            trained_on=entry.trained_on, train_command=entry.train_command,
            paper_metric=entry.metric.paper, paper_kb=entry.sizes.get("paper_kb"), logs=logs,
            eval_text=os.path.join(tmp, entry.eval_text) if entry.eval_text else None,
            text_format=entry.text_format, floats=floats, compact=compact,
            packed=bool(packed), unbundled_packed=any(not f.bundled for f in packed),
            notes=notes, training=entry.training, force=True,
            checkpoint_eval=trained_log if already_lossy and floats != "fp32" else None)
        return add_entry(spec)

