"""The model zoo: pretrained normalized, quantized LSTMs with pinned, verified files.

    import nq_plugin.zoo
    lm = nq_plugin.zoo.load("ptb-char-bc-weight")     # a zoo name, or a folder / checkpoint path
    lm.score("the market"); lm.sample("the market", length=100)

Needs fairseq (this is glue, not core). See ``nq-zoo --help``.
"""
from __future__ import annotations

import os
from typing import Optional

from .manifest import Manifest, ZooEntry, ZooError, zoo_root  # noqa: F401


def load(name_or_path: str, packed: bool = False, revision: Optional[str] = None,
         cache_dir: Optional[str] = None, endpoint: Optional[str] = None,
         bundled: bool = True):
    """A :class:`nq_plugin.zoo.lm.ZooLM` (``score``, ``sample``; ``.models``, ``.task``) for a
    zoo model name (downloaded and verified first) or a local model folder / checkpoint.
    ``bundled=False`` ignores the copy a checkout bundles and takes the Hub's (as
    ``nq-zoo --no-bundled``)."""
    from .fetch import download
    from .lm import ZooLM
    text_format = "ptb_char"
    if os.path.exists(name_or_path):
        path = name_or_path
        if os.path.isdir(path):
            pts = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
            if packed:
                if not os.path.isfile(os.path.join(path, "packed", "checkpoint.pt")):
                    raise ZooError(f"{name_or_path} has no packed copy (packed/checkpoint.pt): "
                                   "load the model by its zoo name (its packed copy is then "
                                   "rebuilt and verified), or make one with nq-pack")
                path, pts = os.path.join(path, "packed"), ["checkpoint.pt"]
            if len(pts) != 1:
                raise ZooError(f"{name_or_path} must hold exactly one .pt, found {pts}")
            path = os.path.join(path, pts[0])
        return ZooLM.from_checkpoint(path, text_format=text_format)
    entry = Manifest.load().get(name_or_path)
    if entry.task != "bptt_lm":
        raise ZooError(f"{entry.name} is a {entry.task} model; load() gives language models")
    folder = download(entry, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                      use_bundled=bundled)
    fmt = entry.text_format
    if packed:
        from .derive import packed_folder
        return ZooLM.from_checkpoint(
            os.path.join(packed_folder(entry, folder, cache_dir), "checkpoint.pt"),
            text_format=fmt)
    return ZooLM.from_checkpoint(os.path.join(folder, entry.checkpoint), text_format=fmt)
