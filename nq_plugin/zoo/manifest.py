"""The zoo's manifest (``nq_plugin/zoo/manifest.json``, package data): the single source of
truth about every published model -- where it lives on the Hugging Face Hub (repository and
pinned 40-hex commit), what it is (task, architecture, quantizer, normalization), its size as the
paper counts it, its measured metric next to the paper's, and every file with its SHA-256 and
size (the Hub client checks only sizes, so these are verified after every download)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..backend import zoo_dir
from ..files import atomic_write_text
from ..errors import UserError

MANIFEST_VERSION = 1
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ZooError(UserError):
    """A zoo problem the user can act on; the message says which file or model and what to do."""


# the manifest ships inside the package (package data): a wheel install lists the zoo and
# downloads from the Hub; a checkout also has the bundled copies under zoo/
PACKAGE_MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.json")


def zoo_root() -> str:
    """The folder of the bundled copies (``models/NAME``): ``$NQ_ZOO_DIR``, or ``zoo/`` of the
    checkout nq_plugin runs from (``pip install -e .``). From a wheel there is none on disk
    (the path does not exist) and every model comes from the Hub."""
    own = zoo_dir()
    if own:
        return own
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "zoo")


def manifest_path() -> str:
    """``$NQ_ZOO_DIR/manifest.json`` (a zoo of one's own, e.g. the tests'), else the package's."""
    own = zoo_dir()
    return os.path.join(own, "manifest.json") if own else PACKAGE_MANIFEST


@dataclass
class ZooFile:
    path: str      # inside the model's repository, "/"-separated
    sha256: str
    size: int
    # False: on the Hub but not in this repository's bundled copy, because it is large and
    # derived from the bundled files (a packed copy: nq-pack of model.pt, byte-reproducible);
    # nq-zoo rebuilds it on first use and checks it against ``sha256`` (zoo/fetch.py)
    bundled: bool = True


@dataclass
class Metric:
    name: str                 # "bpc" | "perplexity" | "accuracy"
    value: float
    split: str                # "test"
    command: str              # the exact evaluation command
    log: str                  # repository path of its log
    paper: Optional[float] = None   # the paper's number for the same row
    eval_args: List[str] = field(default_factory=list)  # fairseq-eval-lm / -validate options

    def better_is_lower(self) -> bool:
        return self.name != "accuracy"

    # how close to the paper's number a reproduction must be (the zoo issue's tolerance)
    TOLERANCE = {"bpc": 0.05, "perplexity": 0.05, "accuracy": 1.0}  # BPC, relative PPL, points

    def within_paper(self, value: Optional[float] = None) -> Optional[bool]:
        """Whether ``value`` (default: the measured one) reproduces the paper's number: within
        0.05 BPC, 5 % perplexity, 1 accuracy point; None when the paper gives no number."""
        value = self.value if value is None else value
        if self.paper is None:
            return None
        tol = self.TOLERANCE[self.name]
        if self.name == "perplexity":
            return value <= self.paper * (1 + tol)
        if self.name == "accuracy":
            return value >= self.paper - tol
        return value <= self.paper + tol


@dataclass
class ZooEntry:
    name: str
    repo_id: str
    revision: Optional[str]          # 40-hex commit on the Hub; None until published
    task: str                        # fairseq task: bptt_lm | sequential_mnist
    arch: str
    quantizer: str
    norm: str
    norm_options: Dict[str, Any]
    dataset: str
    metric: Metric
    sizes: Dict[str, Any]            # nq-summary --json of the checkpoint (+ paper_kb)
    epochs: float
    trained_on: str
    train_command: str
    files: List[ZooFile]
    dictionary_sha256: Optional[str]   # None for models without a dictionary (sMNIST)
    format_version: int
    versions: Dict[str, str]
    license: str = "MIT"
    bundled: Optional[str] = None    # folder inside zoo/ holding the files, if bundled
    checkpoint: str = "model.pt"     # the one .pt at the repository root
    eval_text: Optional[str] = None  # repository path of plain evaluation text we wrote
    text_format: str = "ptb_char"    # how symbols map to text (zoo/text_formats.py)
    notes: str = ""
    # what a resume needs when the run folder is gone (recipes/zoo/campaign.py): the schedule
    # followed, epochs done, the learning rate the schedule reached, the best validation loss,
    # the campaign run that produced these weights; None for entries made by hand
    training: Optional[Dict[str, Any]] = None
    # how model.pt stores its tensors (nq_plugin/storage.py): {"exact": {encoding: [names]},
    # "lossy": {encoding: [names]}, "quantized_sha256": the trained model's quantized weights
    # of the "exact" tensors,
    # "uncompacted_metric": the test number before a lossy encoding}; None: all as trained
    storage: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("training", "storage"):
            if data[key] is None:
                del data[key]  # entries made before these records stay as they were
        for f in data["files"]:
            if f["bundled"]:
                del f["bundled"]  # the default: manifests stay as they were
        return data

    def unbundled(self) -> List[ZooFile]:
        """The files the bundled copy leaves out (rebuilt on first use)."""
        return [f for f in self.files if not f.bundled]

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "ZooEntry":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ZooError(f"manifest entry {data.get('name')!r} has unknown fields {unknown}: "
                           "it was written by a newer nq_plugin; upgrade nq_plugin")
        data = dict(data)
        data["metric"] = Metric(**data["metric"])
        data["files"] = [ZooFile(**f) for f in data["files"]]
        entry = cls(**data)
        entry.validate()
        return entry

    def validate(self) -> None:
        if self.revision is not None and not HEX40.match(self.revision):
            raise ZooError(f"{self.name}: revision {self.revision!r} is not a 40-hex commit; the "
                           "zoo pins Hub revisions by commit only")
        for f in self.files:
            if not HEX64.match(f.sha256) or f.size < 0 or f.path.startswith(("/", "..")) \
                    or "/../" in f.path:
                raise ZooError(f"{self.name}: bad file record {f}")
        for f in self.files:
            if not f.bundled and not f.path.startswith("packed/"):
                raise ZooError(f"{self.name}: {f.path} is marked bundled: false, but only the "
                               "packed copy (packed/...) can be rebuilt from the bundled files")
        roots = [f.path for f in self.files if f.path.endswith(".pt") and "/" not in f.path]
        if roots != [self.checkpoint]:
            raise ZooError(f"{self.name}: the repository root must hold exactly one .pt "
                           f"({self.checkpoint}); fairseq's Hub loader loads every root .pt as "
                           f"an ensemble. Found {roots}")

    def file(self, path: str) -> ZooFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)


@contextlib.contextmanager
def _folder_lock(path: str):
    """An exclusive lock on the folder of ``path`` (flock on the folder itself: the manifest is
    replaced by a rename, so a lock on its file would not exclude the next writer), for one
    read-merge-write; without flock (not POSIX), no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class Manifest:
    """The zoo's entries by name. :meth:`put` records an entry as changed; :meth:`save` writes
    the changed entries into the manifest as it is on disk then, under a lock of its folder,
    so that processes saving other entries meanwhile (two campaign drivers, ``nq-zoo add``) keep
    theirs."""
    models: Dict[str, ZooEntry] = field(default_factory=dict)
    path: Optional[str] = None
    changed: set = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def load(cls, path: Optional[str] = None) -> "Manifest":
        path = path or manifest_path()
        if not os.path.isfile(path):
            raise ZooError(f"zoo manifest not found: {path} (NQ_ZOO_DIR must name a folder with "
                           "a manifest.json; unset it to use the zoo nq_plugin ships)")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ZooError(f"{path} is not valid JSON ({err}); restore it (git checkout, or "
                           "reinstall nq_plugin)") from None
        if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
            raise ZooError(f"{path}: manifest_version {data.get('manifest_version')!r}, this "
                           f"nq_plugin reads version {MANIFEST_VERSION}")
        models = {}
        for item in data.get("models", []):
            entry = ZooEntry.from_json(item)
            models[entry.name] = entry
        return cls(models, path)

    def get(self, name: str) -> ZooEntry:
        if name not in self.models:
            raise ZooError(f"no zoo model named {name!r}; `nq-zoo list` shows them: "
                           f"{', '.join(sorted(self.models)) or '(none)'}")
        return self.models[name]

    def put(self, entry: ZooEntry) -> None:
        entry.validate()
        self.models[entry.name] = entry
        self.changed.add(entry.name)

    def save(self, path: Optional[str] = None) -> None:
        path = path or self.path or manifest_path()
        with _folder_lock(path):
            if os.path.isfile(path):  # the entries others saved since this one was loaded
                current = Manifest.load(path).models
                current.update({name: self.models[name] for name in self.changed})
                self.models = current
            data = {"manifest_version": MANIFEST_VERSION,
                    "models": [self.models[k].to_json() for k in sorted(self.models)]}
            atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        self.changed = set()
