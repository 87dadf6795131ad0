"""recipes/zoo/gpu_round.py: a round's run folders fit what a lent machine returns, come back
whole, keep what a resume needs, and go into the zoo and on through the campaign."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.fairseq_utils import ROOT
from tests.recipes.campaign_data import demo_dataset

ROUND = ROOT / "recipes" / "zoo" / "gpu_round.py"
DRIVER = ROOT / "recipes" / "zoo" / "campaign.py"


@pytest.fixture(scope="module")
def gpu_round():
    sys.path.insert(0, str(ROUND.parent))
    spec = importlib.util.spec_from_file_location("nq_gpu_round_under_test", ROUND)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nq_gpu_round_under_test"] = module
    spec.loader.exec_module(module)
    return module


def folder(root, name, last=b"L" * 1000, best=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "checkpoint_last.pt").write_bytes(last)
    if best is not None:
        (d / "checkpoint_best.pt").write_bytes(best)
    (d / "train.log").write_text(f"log of {name}\n")
    return d


def test_the_parts_fit_and_come_back_whole(gpu_round, tmp_path):
    runs = tmp_path / "runs"
    folder(runs, "a", best=b"B" * 3000)   # a best older than the last: the larger one
    folder(runs, "b", best=b"b" * 2000)
    out = tmp_path / "out"
    out.mkdir()
    gpu_round.fit(str(runs), ["a", "b"], limit=6500)
    # over the limit: the largest best went, and only as many as needed
    assert not (runs / "a" / "checkpoint_best.pt").exists()
    assert (runs / "a" / "best_is_last").exists()
    assert (runs / "b" / "checkpoint_best.pt").read_bytes() == b"b" * 2000
    gpu_round.PART_BYTES, saved = 2048, gpu_round.PART_BYTES
    try:
        parts = gpu_round.pack(str(runs), ["a", "b"], str(out))
    finally:
        gpu_round.PART_BYTES = saved
    assert len(parts) > 1 and all(os.path.getsize(p) <= 2048 for p in parts)
    assert not (out / "runs.tar").exists()
    back = tmp_path / "back"
    assert sorted(gpu_round.unpack(parts, str(back))) == ["a", "b"]
    # the best left behind is the last one again; the marker is gone
    assert (back / "a" / "checkpoint_best.pt").read_bytes() == b"L" * 1000
    assert not (back / "a" / "best_is_last").exists()
    assert (back / "b" / "checkpoint_best.pt").read_bytes() == b"b" * 2000
    assert (back / "b" / "train.log").read_text() == "log of b\n"
    # nothing already there is overwritten
    with pytest.raises(SystemExit, match="already in"):
        gpu_round.unpack(parts, str(back))


def test_a_best_equal_to_the_last_travels_once(gpu_round, tmp_path):
    model = torch.nn.Linear(3, 2)
    adam = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    adam.step()
    ckpt = {"model": model.state_dict(), "last_optimizer_state": adam.state_dict(),
            "extra_state": {"best": 1.5}}
    d = tmp_path / "r"
    d.mkdir()
    torch.save(ckpt, d / "checkpoint_last.pt")
    shutil.copyfile(d / "checkpoint_last.pt", d / "checkpoint_best.pt")  # as fairseq saves
    torch.save(ckpt, d / "checkpoint_3_400.pt")
    gpu_round.strip_optimizer(str(d))
    assert sorted(os.listdir(d)) == ["best_is_last", "checkpoint_last.pt"]
    state = torch.load(d / "checkpoint_last.pt", weights_only=True)
    assert state["extra_state"] == {"best": 1.5}
    assert state["last_optimizer_state"]["state"] == {}
    assert state["last_optimizer_state"]["param_groups"] == adam.state_dict()["param_groups"]


def test_a_fresh_optimizer_state_steps_as_a_new_optimizer(gpu_round):
    """The stripped state loads into the optimizer, which then takes the step a new one takes."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    used = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        used.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        used.step()
    fresh = gpu_round.fresh_optimizer_state({"last_optimizer_state": used.state_dict()})
    x = torch.randn(4, 3)
    results = []
    for state in (fresh, None):
        m = torch.nn.Linear(3, 2)
        m.load_state_dict(model.state_dict())
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        if state is not None:
            opt.load_state_dict(state)
        m(x).pow(2).sum().backward()
        opt.step()
        results.append(m.weight.detach().clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], model.weight)  # it did step
    assert gpu_round.fresh_optimizer_state({"last_optimizer_state": None}) is None


@pytest.mark.slow
def test_a_round_goes_into_the_zoo_and_on_through_the_campaign(tmp_path, demo_char_data):
    """A round (on the CPU here) trains its runs in parallel; its parts unpack into a runs
    folder; --publish-only puts the best checkpoint into the zoo naming the round's machine;
    the campaign then resumes the folder where the round stopped (update count and best
    validation loss kept)."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    data = demo_dataset(tmp_path, demo_char_data)
    tiny = ["--hidden-size", "24", "--batch-size", "4", "--tokens-per-sample", "16",
            "--log-interval", "10"]
    runs = [{"id": f"demo.{q}", "entry": f"demo-{q}", "dataset": "demo", "quantizer": q,
             "norm": "weight", "epochs": 1000, "paper": None, "paper_kb": None,
             "schedule": "test schedule", "args": tiny} for q in ("bc", "tc")]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"datasets": {"demo": data}, "runs": runs}))
    env = dict(os.environ, NQ_ZOO_DIR=str(zoo), HF_HUB_OFFLINE="1")
    data_root = os.path.dirname(demo_char_data)
    # a round too short for its epochs: each run stops by its --stop-time-hours
    res = subprocess.run([sys.executable, str(ROUND), "demo.bc", "demo.tc", "--cpu", "--plan",
                          str(plan), "--data-root", data_root, "--runs-dir",
                          str(tmp_path / "round"), "--minutes", "0.15", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.bc] exit 0" in res.stdout and "[demo.tc] exit 0" in res.stdout
    parts = sorted(str(p) for p in (tmp_path / "out").iterdir())
    assert parts and all(os.path.basename(p).startswith("runs.tar.part-") for p in parts)
    back = tmp_path / "runs"
    res = subprocess.run([sys.executable, str(ROUND), "--unpack", *parts, "--runs-dir",
                          str(back)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    last = torch.load(back / "demo.bc" / "checkpoint_last.pt", weights_only=True)
    assert last["last_optimizer_state"]["state"] == {}
    updates = last["optimizer_history"][-1]["num_updates"]
    best = last["extra_state"]["best"]
    assert updates > 0 and (back / "demo.bc" / "checkpoint_best.pt").is_file()

    common = [sys.executable, str(DRIVER), "--plan", str(plan), "--data-root", data_root,
              "--runs-dir", str(back), "--only", "demo.bc"]
    res = subprocess.run([*common, "--publish-only"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.bc] zoo updated: None ->" in res.stdout
    entry = {m["name"]: m for m in json.loads((zoo / "manifest.json").read_text())["models"]}
    assert list(entry) == ["demo-bc"]  # --only: the other run stays in its folder
    assert entry["demo-bc"]["trained_on"].endswith(
        "demo.bc of the campaign, 2 runs in parallel on it (recipes/zoo/gpu_round.py)")

    # the campaign goes on from where the round stopped: one epoch more than it reached
    epoch = last["extra_state"]["train_iterator"]["epoch"]
    plan.write_text(json.dumps({"datasets": {"demo": data},
                                "runs": [dict(runs[0], epochs=epoch + 1)]}))
    res = subprocess.run([*common, "--hours", "0.2"], capture_output=True, text=True, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.bc] resume:" in res.stdout and "--reset-optimizer" not in res.stdout
    log = (back / "demo.bc" / "train.log").read_text()
    assert f"checkpoint_last.pt (epoch {last['extra_state']['train_iterator']['epoch']} @ " \
        f"{updates} updates)" in log
    after = torch.load(back / "demo.bc" / "checkpoint_last.pt", weights_only=True)
    assert after["optimizer_history"][-1]["num_updates"] > updates
    assert after["extra_state"]["best"] <= best
    state = json.loads((back / "demo.bc" / "state.json").read_text())
    assert state["done"] and len(state["trained_on"]) == 2  # the round's machine, then here
