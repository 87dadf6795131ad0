"""Getting a zoo model's files: bundled in this repository first (works with no network at
all), else from the Hugging Face Hub at the manifest's pinned 40-hex commit via
``huggingface_hub`` (``HF_HUB_OFFLINE`` honoured). Every file's SHA-256 and size are checked
after every download, because the Hub client checks only sizes; a bad file
is removed from the cache (only the cache's own copy: nothing the user made is touched) and the
error names it and says what to do."""
from __future__ import annotations

import logging
import os
from typing import List, Optional

from ..files import sha256_file
from .manifest import ZooEntry, ZooError, zoo_root

logger = logging.getLogger(__name__)


def verify_folder(entry: ZooEntry, folder: str, bundled_copy: bool = False,
                  under: str = "") -> List[str]:
    """Problems with ``folder`` as a copy of the entry's files (empty: all present and intact):
    the one check of a model's files against the manifest (size, then sha256). A bundled copy
    may leave out the files the manifest marks ``bundled: false`` (zoo/derive.py rebuilds
    them), but those it holds must be intact. ``under`` (e.g. ``"packed/"``): only the files
    below that folder of the model, with ``folder`` the copy of that folder itself."""
    problems = []
    for f in entry.files:
        if not f.path.startswith(under):
            continue
        path = os.path.join(folder, *f.path[len(under):].split("/"))
        if bundled_copy and not f.bundled and not os.path.exists(path):
            continue
        if not os.path.isfile(path):
            problems.append(f"{f.path}: missing")
        elif os.path.getsize(path) != f.size:
            problems.append(f"{f.path}: {os.path.getsize(path)} bytes, expected {f.size}")
        else:
            digest = sha256_file(path)
            if digest != f.sha256:
                problems.append(f"{f.path}: sha256 {digest[:12]}.. differs from the manifest's "
                                f"{f.sha256[:12]}..")
    return problems


def bundled_folder(entry: ZooEntry) -> Optional[str]:
    if not entry.bundled:
        return None
    folder = os.path.join(zoo_root(), entry.bundled)
    return folder if os.path.isdir(folder) else None


def hub_endpoint(endpoint: Optional[str] = None) -> str:
    from huggingface_hub import constants
    return (endpoint or constants.ENDPOINT).rstrip("/")


def check_reachable(endpoint: Optional[str] = None, timeout: float = 5.0) -> None:
    """One bounded attempt to reach the Hub (the client alone retries a failed connection with
    back-off for about two minutes before it says so)."""
    import socket
    from urllib.parse import urlparse
    url = urlparse(hub_endpoint(endpoint))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ZooError(f"the Hub at {url.scheme}://{url.netloc} cannot be reached ({err}): "
                       "offline? Connect, or set HF_HUB_OFFLINE=1 to use what the cache "
                       "holds") from None


def http_status_error(err: Exception, repo_id: str, revision: Optional[str]) -> Optional[str]:
    """A one-line reason for the Hub's HTTP errors that the user can act on, else None."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return (f"the Hub refused the request for {repo_id} (HTTP {status}): the token is "
                "missing or has no write access -- `hf auth login`, or set HF_TOKEN")
    if status == 404:
        return (f"the Hub has no {repo_id}" + (f" at revision {revision}" if revision else "")
                + " (HTTP 404): check the repository id and the revision")
    return None


def _hub_error(entry: ZooEntry, path: str, revision: str, err: Exception) -> ZooError:
    from huggingface_hub import errors
    name = type(err).__name__
    if isinstance(err, errors.LocalEntryNotFoundError):
        return ZooError(f"{entry.name}: {path} at {revision[:12]} is not in the cache and the Hub "
                        "cannot be reached (offline, or HF_HUB_OFFLINE=1). Connect once to "
                        "download it, or pass --cache-dir of a cache that holds it")
    if isinstance(err, errors.RepositoryNotFoundError):
        return ZooError(f"{entry.name}: Hub repository {entry.repo_id} not found")
    if isinstance(err, errors.RevisionNotFoundError):
        return ZooError(f"{entry.name}: revision {revision} not found in {entry.repo_id}; the "
                        "manifest pins the published commit -- omit --revision to use it")
    if isinstance(err, errors.EntryNotFoundError):
        return ZooError(f"{entry.name}: {path} not found in {entry.repo_id} at {revision[:12]}")
    reason = http_status_error(err, entry.repo_id, revision)
    if reason:
        return ZooError(f"{entry.name}: {reason}")
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ZooError(f"{entry.name}: downloading {path} failed ({name}: {first})")


def _remove_cached(path: str) -> None:
    """Remove a bad file from the Hub cache: the snapshot's link and the blob it points to (both
    inside the cache folder that ``hf_hub_download`` returned the path from)."""
    blob = os.path.realpath(path)
    for p in (path, blob):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def download(entry: ZooEntry, revision: Optional[str] = None, cache_dir: Optional[str] = None,
             endpoint: Optional[str] = None, use_bundled: bool = True) -> str:
    """The folder holding the entry's verified files (the repository layout): the bundled copy
    when present and intact, else the Hub snapshot at ``revision`` (default: the manifest's)."""
    if use_bundled and revision in (None, entry.revision):
        folder = bundled_folder(entry)
        if folder is not None:
            problems = verify_folder(entry, folder, bundled_copy=True)
            if not problems:
                return folder
            logger.warning("bundled copy of %s in %s is damaged (%s); trying the Hub",
                           entry.name, folder, "; ".join(problems))
    revision = revision or entry.revision
    if revision is None:
        if use_bundled and entry.bundled and os.path.isdir(os.path.join(zoo_root(),
                                                                        entry.bundled)):
            raise ZooError(f"{entry.name} is not published on the Hub yet and its bundled copy "
                           f"(zoo/{entry.bundled}) is damaged: restore it with "
                           "`git checkout zoo/`")
        raise ZooError(f"{entry.name} is not published on the Hub yet (the manifest pins no "
                       "revision): only a checkout of the nq_plugin repository, which bundles "
                       "it under zoo/, has it")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    verify = revision == entry.revision
    cached = all(isinstance(try_to_load_from_cache(entry.repo_id, f.path, cache_dir=cache_dir,
                                                   revision=revision), str)
                 for f in entry.files)
    if not cached and not constants.HF_HUB_OFFLINE:
        check_reachable(endpoint)
    if not verify:
        logger.warning("revision %s is not the manifest's pinned %s: sha256 cannot be checked",
                       revision, entry.revision)
    snapshot = None
    for f in entry.files:
        try:
            local = hf_hub_download(entry.repo_id, f.path, revision=revision, cache_dir=cache_dir,
                                    endpoint=endpoint, library_name="nq_plugin")
        except Exception as err:  # the client's own error classes, mapped to a clear message
            raise _hub_error(entry, f.path, revision, err) from None
        if verify:
            size = os.path.getsize(local)
            digest = sha256_file(local)
            if size != f.size or digest != f.sha256:
                _remove_cached(local)
                how = ("same size, different bytes" if size == f.size else
                       f"{size} bytes, expected {f.size}")
                raise ZooError(
                    f"{entry.name}: downloaded {f.path} does not match the manifest ({how}: "
                    f"sha256 {digest[:12]}.. vs {f.sha256[:12]}..); the bad copy was removed "
                    "from the cache. Download again; if it persists the Hub copy differs from "
                    "the published one -- report it")
        snapshot = local[: len(local) - len(f.path)].rstrip("/" + os.sep)
    return snapshot
