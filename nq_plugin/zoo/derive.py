"""Packed copies the bundled zoo leaves out, rebuilt on first use and verified.

A model's ``packed/`` folder is ``nq-pack`` of its ``model.pt`` -- byte-reproducible (same
nq_plugin packed format, same tensors: same bytes). Where bundling it would make this repository
too large (the word model: 24 MB of fp16 embedding and softmax, twice), the manifest lists its
files with ``bundled: false`` and their SHA-256 as published. :func:`packed_folder` returns the
packed copy beside the model when it is there (a Hub download, or a bundled one), else packs the
verified ``model.pt`` into a cache folder, checks every file against the manifest and only then
moves the folder into place: a copy that differs is never used, and the error says so.
"""
from __future__ import annotations

import os
import shutil
from typing import List, Optional

from ..backend import zoo_cache
from ..files import temporary_folder
from .fetch import verify_folder
from .manifest import ZooEntry, ZooError

PACKED = "packed/"


def cache_root(cache_dir: Optional[str] = None) -> str:
    """Where rebuilt packed copies live: ``cache_dir``, else ``$NQ_ZOO_CACHE``, else
    ``~/.cache/nq_plugin/zoo``."""
    return os.path.abspath(cache_dir or zoo_cache() or os.path.join(
        os.path.expanduser("~"), ".cache", "nq_plugin", "zoo"))


def pack_entry(entry: ZooEntry, folder: str, dest: str,
               checkpoint: Optional[str] = None) -> None:
    """``nq-pack`` of the model in ``folder`` (its ``checkpoint``, default the entry's) with the
    folder's dictionary, into the new folder ``dest``."""
    from ..packed.export import pack_checkpoint
    dictionary = os.path.join(folder, "dict.txt")
    pack_checkpoint(checkpoint or os.path.join(folder, entry.checkpoint), dest,
                    dictionary if os.path.isfile(dictionary) else None, force=True)


def packed_mismatches(entry: ZooEntry, packed: str) -> List[str]:
    """How the packed folder ``packed`` differs from the packed files the manifest lists."""
    return verify_folder(entry, packed, under=PACKED)


def rebuild_problems(entry: ZooEntry, folder: str, dest: str) -> List[str]:
    """Pack the model in ``folder`` into ``dest`` and compare it with the published packed
    copy: the one "rebuild and compare" of the zoo (first use, ``nq-zoo unbundle-packed``)."""
    pack_entry(entry, folder, dest)
    return packed_mismatches(entry, dest)


def packed_folder(entry: ZooEntry, folder: str, cache_dir: Optional[str] = None) -> str:
    """The folder holding ``entry``'s packed copy, verified: ``folder/packed`` when the model's
    folder has it, else a copy rebuilt from ``folder/model.pt`` in :func:`cache_root`."""
    packed = [f for f in entry.files if f.path.startswith(PACKED)]
    if not packed:
        raise ZooError(f"{entry.name} has no packed copy in the zoo; make one with "
                       f"`nq-pack {entry.checkpoint} OUTDIR`")
    beside = os.path.join(folder, "packed")
    if all(os.path.isfile(os.path.join(folder, *f.path.split("/"))) for f in packed):
        return beside  # the download verified these files
    model = entry.file(entry.checkpoint)
    target = os.path.join(cache_root(cache_dir), f"{entry.name}-{model.sha256[:12]}", "packed")
    if os.path.isdir(target):
        if not packed_mismatches(entry, target):
            return target
        shutil.rmtree(target)  # our own cache's damaged copy: rebuilt below
    _rebuild(entry, folder, target)
    return target


def _rebuild(entry: ZooEntry, folder: str, target: str) -> None:
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = temporary_folder(parent, ".packed.")
    try:
        problems = rebuild_problems(entry, folder, tmp)
        if problems:
            made = entry.versions.get("nq_plugin", "?")
            raise ZooError(
                f"{entry.name}: the packed copy nq-pack rebuilt from {entry.checkpoint} differs "
                f"from the published one ({'; '.join(problems)}). It was not used. The "
                f"published copy was made by nq_plugin {made}; this nq_plugin packs "
                "differently. Use the unpacked model (drop --packed), or download the published "
                "packed files from the Hub once it is reachable")
        if not os.path.isdir(target):  # (another process may have finished first)
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
