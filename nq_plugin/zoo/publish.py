"""Publishing a zoo model folder to the Hugging Face Hub: ``HfApi.create_repo`` ->
``create_commit`` (every file of the folder, the card included) -> ``create_tag``; the manifest
then pins the returned commit. ``dry_run`` writes the exact folder that would be uploaded."""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import List, Optional

from .. import __version__
from ..files import atomic_write_text
from .card import model_card
from .derive import PACKED, packed_folder
from .fetch import check_reachable, http_status_error, verify_folder
from .manifest import Manifest, ZooEntry, ZooError


def stage(entry: ZooEntry, folder: str, repo_id: str, out: str) -> List[str]:
    """Write into the new folder ``out`` exactly what is uploaded: the entry's verified files
    and its card for ``repo_id``. Returns the repository paths."""
    problems = verify_folder(entry, folder, bundled_copy=True)
    if problems:
        raise ZooError(f"{folder} does not match the manifest entry {entry.name}: "
                       + "; ".join(problems) + " -- rebuild it with nq-zoo add")
    if os.path.exists(out) and os.listdir(out):
        raise ZooError(f"{out} exists and is not empty; choose a new folder")
    sources = {f.path: os.path.join(folder, *f.path.split("/")) for f in entry.files}
    missing = [f for f in entry.files if not os.path.isfile(sources[f.path])]
    if missing:  # left out of the bundle: rebuilt and verified (zoo/derive.py)
        packed = packed_folder(entry, folder)
        for f in missing:
            sources[f.path] = os.path.join(packed, *f.path[len(PACKED):].split("/"))
    files = [f.path for f in entry.files]
    for rel in files:
        dst = os.path.join(out, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(sources[rel], dst)
    staged = dataclasses.replace(entry, repo_id=repo_id)
    atomic_write_text(os.path.join(out, "README.md"), str(model_card(staged)))
    return sorted(files + ["README.md"])


def publish(entry: ZooEntry, folder: str, repo_id: str, manifest: Optional[Manifest] = None,
            endpoint: Optional[str] = None, token: Optional[str] = None,
            dry_run: Optional[str] = None) -> Optional[str]:
    """Upload the entry's files from ``folder`` with its card as ``repo_id``; return the new
    commit (None for a dry run, which only writes the staged folder to ``dry_run``)."""
    if dry_run:
        stage(entry, folder, repo_id, dry_run)
        return None
    from huggingface_hub import CommitOperationAdd, HfApi
    with tempfile.TemporaryDirectory() as tmp:
        staged = os.path.join(tmp, "repo")
        files = stage(entry, folder, repo_id, staged)
        check_reachable(endpoint)
        api = HfApi(endpoint=endpoint, token=token)
        ops = [CommitOperationAdd(path_in_repo=rel,
                                  path_or_fileobj=os.path.join(staged, *rel.split("/")))
               for rel in files]
        try:
            api.create_repo(repo_id, exist_ok=True)
            info = api.create_commit(repo_id, ops,
                                     commit_message=f"{entry.name} (nq_plugin {__version__})")
            commit = info.oid
            api.create_tag(repo_id, tag=f"nq_plugin-{__version__}-{commit[:8]}",
                           revision=commit)
        except Exception as err:  # the client's errors, as one line the user can act on
            reason = http_status_error(err, repo_id, None)
            first = (str(err).strip().splitlines() or [""])[0]
            raise ZooError(f"publishing {entry.name}: " + (
                reason or f"{type(err).__name__}: {first}")) from None
    if manifest is not None:
        manifest.put(dataclasses.replace(entry, repo_id=repo_id, revision=commit))
        manifest.save()
    return commit
