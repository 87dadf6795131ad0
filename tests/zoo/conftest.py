"""A tiny zoo built from a real (3-update) training run on the demo text, in a temporary zoo
folder (NQ_ZOO_DIR), and the local Hub stand-in."""
import json
import logging
import os

import pytest

from tests.fairseq_utils import DEMO_TEXT, console, train
from tests.zoo.hub_standin import HubStandIn

# fairseq turns on debug logging; the HTTP client then logs from an atexit hook after pytest
# closed its streams ("--- Logging error ---" noise at exit)
for _name in ("httpcore2", "httpx2", "httpcore", "httpx"):
    logging.getLogger(_name).setLevel(logging.WARNING)

NAME = "demo-char-bc-weight"
REPO = "nq-test/demo-char-bc-weight"


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, demo_char_data):
    """(zoo dir, manifest entry dict, environment for console commands)."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    ckpt = train(demo_char_data, tmp_path_factory.mktemp("run"), "--hidden-size", "32",
                 "--batch-size", "4", "--tokens-per-sample", "16", "--quantizer", "bc",
                 "--norm", "weight", updates=3)
    env = dict(os.environ, NQ_ZOO_DIR=str(root), HF_HUB_OFFLINE="1")
    plain = root.parent / "eval_plain.txt"  # the demo text decoded to plain English
    plain.write_text("".join(line.replace(" ", "").replace("_", " ").strip() + "\n"
                             for line in (DEMO_TEXT / "valid.txt").read_text().splitlines()))
    console("nq-zoo", "add", NAME, "--checkpoint", ckpt, "--data", demo_char_data,
            "--dataset", "demo_char", "--repo-id", REPO, "--metric", "bpc",
            "--eval-args", "--task bptt_lm --gen-subset test --tokens-per-sample 16 --cpu",
            "--paper-metric", "1.5", "--paper-kb", "165", "--epochs", "0.1",
            "--trained-on", "the test suite's CPU", "--train-command", "tests/zoo/conftest.py",
            "--logs", str(DEMO_TEXT / "valid.txt"), "--eval-text", str(plain),
            env=env)
    entry = json.loads((root / "manifest.json").read_text())["models"][0]
    return root, entry, env


@pytest.fixture()
def hub():
    server = HubStandIn().start()
    yield server
    server.stop()


@pytest.fixture()
def published(hub, tiny_zoo):
    """The tiny model published to the stand-in; returns (server, commit)."""
    root, entry, _ = tiny_zoo
    folder = root / entry["bundled"]
    files = {f["path"]: (folder / f["path"]).read_bytes() for f in entry["files"]}
    files["README.md"] = (folder / "README.md").read_bytes()
    commit = hub.add_commit(REPO, files)
    return hub, commit
