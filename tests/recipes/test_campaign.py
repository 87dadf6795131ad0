"""recipes/zoo/campaign.py on tiny data: a run from scratch enters the zoo, a run resumes from
its folder's checkpoint_last.pt, a run starts from the zoo's bundled weights, an entry is
replaced only when the test number improves, a failed update leaves nothing behind, and a new
entry that would overfill the tracked tree is not added."""
import dataclasses
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from tests.fairseq_utils import ROOT
from tests.recipes.campaign_data import demo_dataset

pytestmark = pytest.mark.slow
DRIVER = ROOT / "recipes" / "zoo" / "campaign.py"
TINY = ["--hidden-size", "24", "--batch-size", "4", "--tokens-per-sample", "16",
        "--log-interval", "10"]


def run_plan(c, zoo, runs, *extra):
    tmp = c.tmp
    plan = tmp / f"plan_{len(list(tmp.glob('plan_*')))}.json"
    plan.write_text(json.dumps({"datasets": c.datasets, "runs": runs}))
    env = dict(os.environ, NQ_ZOO_DIR=str(zoo), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(DRIVER), "--plan", str(plan), "--hours", "0.2",
                           "--data-root", str(c.data_root), "--runs-dir", str(tmp / "runs"),
                           *extra], capture_output=True, text=True, env=env, timeout=900)


def run(id, entry="demo-char", epochs=1, args=(), from_zoo=False, dataset="demo", after=None,
        average=0):
    return {"id": id, "entry": entry, "dataset": dataset, "quantizer": "bc", "norm": "weight",
            "epochs": epochs, "paper": None, "paper_kb": None, "schedule": f"test schedule {id}",
            "args": [*TINY, *args], "from_zoo": from_zoo, "after": after, "average": average}


def campaign_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("nq_campaign_constants", DRIVER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nq_campaign_constants"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def manifest(zoo):
    return json.loads((zoo / "manifest.json").read_text())


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, demo_char_data):
    tmp = tmp_path_factory.mktemp("campaign")
    zoo = tmp / "zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    data = demo_dataset(tmp, demo_char_data)
    return types.SimpleNamespace(
        tmp=tmp, zoo=zoo, data_root=os.path.dirname(demo_char_data),
        datasets={"demo": data, "broken": dict(data, eval_text=str(tmp / "missing.txt"))})


def test_scratch_then_resume_then_zoo(campaign):
    c, tmp, zoo = campaign, campaign.tmp, campaign.zoo
    res = run_plan(c, zoo, [run("demo.a", epochs=1)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.a] scratch:" in res.stdout and "zoo updated: None ->" in res.stdout
    entry = manifest(zoo)["models"][0]
    assert entry["name"] == "demo-char" and entry["epochs"] == 1.0
    assert entry["training"]["run"] == "demo.a" and entry["training"]["started"] == "scratch"
    assert entry["training"]["lr"] == pytest.approx(0.002)
    folder = zoo / "models" / "demo-char"
    assert (folder / "logs" / "train_demo_a.log").is_file()
    assert "Where it left off: epochs 1" in (folder / "README.md").read_text()
    assert any(f["path"] == "packed/checkpoint.pt" for f in entry["files"])

    # the same run with a longer plan resumes from its own checkpoint_last.pt
    res = run_plan(c, zoo, [run("demo.a", epochs=2)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.a] resume:" in res.stdout
    log = (tmp / "runs" / "demo.a" / "train.log").read_text()
    assert "checkpoint_last.pt (epoch 2 @" in log
    last = torch.load(tmp / "runs" / "demo.a" / "checkpoint_last.pt", weights_only=True)
    assert last["extra_state"]["train_iterator"]["epoch"] == 3
    state = json.loads((tmp / "runs" / "demo.a" / "state.json").read_text())
    assert state["done"] and state["considered"]["test"] > 0
    before = (zoo / "manifest.json").read_bytes()

    # a new run from the zoo's bundled weights, with a learning rate too small to change them:
    # it starts from model.pt with a fresh optimizer, and the entry is kept (no improvement)
    entry = manifest(zoo)["models"][0]
    res = run_plan(c, zoo, [run("demo.b", args=("--lr", "1e-12"), from_zoo=True)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.b] zoo:" in res.stdout and "--reset-optimizer" in res.stdout
    assert f"Loaded checkpoint {folder / 'model.pt'}" in \
        (tmp / "runs" / "demo.b" / "train.log").read_text()
    assert "[demo.b] kept the zoo's" in res.stdout
    commands = json.loads((tmp / "runs" / "demo.b" / "state.json").read_text())["commands"]
    assert len(commands) == 1 and "--lr 1e-12" in commands[0]  # the command it really ran
    assert "--restore-file model.pt --reset-optimizer" in commands[0]
    assert str(tmp) not in commands[0] and "--stop-time-hours" not in commands[0]
    assert (zoo / "manifest.json").read_bytes() == before
    state = json.loads((tmp / "runs" / "demo.b" / "state.json").read_text())
    assert state["base_epochs"] == entry["epochs"] and state["base_logs"]
    # a second campaign does not evaluate the same checkpoint again
    res = run_plan(c, zoo, [run("demo.b", args=("--lr", "1e-12"), from_zoo=True)])
    assert res.returncode == 0 and "fairseq-eval-lm" not in res.stdout + res.stderr
    assert (zoo / "manifest.json").read_bytes() == before

    # another checkout's zoo (a driver in a worktree published into its own): the run's best is
    # judged again against that zoo, from the test number already measured
    other = tmp / "other_zoo"
    other.mkdir()
    (other / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    eval_log = tmp / "runs" / "demo.a" / campaign_module().EVAL_LOG
    measured = eval_log.stat().st_mtime_ns
    res = run_plan(c, other, [run("demo.a", epochs=2)], "--publish-only")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.a] zoo updated: None ->" in res.stdout
    assert eval_log.stat().st_mtime_ns == measured  # not evaluated again
    assert manifest(other)["models"][0]["name"] == "demo-char"
    assert (zoo / "manifest.json").read_bytes() == before  # the first zoo untouched


def test_a_phase_goes_on_from_the_earlier_runs_best_the_zoo_did_not_take(campaign):
    # after test_scratch_then_resume_then_zoo: the zoo holds demo.a's weights; demo.b (from
    # them, at a rate too small to change them) is finished and was not taken
    c, tmp, zoo = campaign, campaign.tmp, campaign.zoo
    runs = tmp / "runs"
    before = (zoo / "manifest.json").read_bytes()
    prev = json.loads((runs / "demo.b" / "state.json").read_text())
    assert prev["done"] and manifest(zoo)["models"][0]["training"]["run"] == "demo.a"
    res = run_plan(c, zoo, [run("demo.b2", args=("--lr", "1e-12"), after="demo.b")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.b2] phase:" in res.stdout and "--reset-optimizer" in res.stdout
    assert f"Loaded checkpoint {runs / 'demo.b' / 'checkpoint_best.pt'}" in \
        (runs / "demo.b2" / "train.log").read_text()
    state = json.loads((runs / "demo.b2" / "state.json").read_text())
    # its base: demo.b's base (the zoo's logs and commands then), then demo.b itself
    assert state["started"] == "phase" and state["base_run"] == "demo.b"
    assert state["base_logs"] == prev["base_logs"] + ["train_demo_b.log"]
    assert all((runs / "demo.b2" / "base_logs" / n).is_file() for n in state["base_logs"])
    assert state["base_epochs"] == pytest.approx(prev["base_epochs"] + 1)
    assert state["base_train_command"] == "\n".join(
        [prev["base_train_command"], *prev["commands"]])
    assert "--restore-file PREV_RUN_DIR/checkpoint_best.pt --reset-optimizer" in \
        state["commands"][0]
    assert (zoo / "manifest.json").read_bytes() == before  # no gain: the zoo is unchanged

    # judged against an empty zoo, its card lists every phase's log and command, and counts
    # every phase's epochs
    other = tmp / "phase_zoo"
    other.mkdir()
    (other / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    res = run_plan(c, other, [run("demo.b2", args=("--lr", "1e-12"), after="demo.b")],
                   "--publish-only")
    assert res.returncode == 0, res.stdout + res.stderr
    entry = manifest(other)["models"][0]
    assert entry["epochs"] == pytest.approx(state["base_epochs"] + 1)
    logs = sorted(p.name for p in (other / "models" / "demo-char" / "logs").glob("train*.log"))
    assert logs == ["train_demo_a.log", "train_demo_b.log", "train_demo_b2.log"]
    card = (other / "models" / "demo-char" / "README.md").read_text()
    assert "PREV_RUN_DIR/checkpoint_best.pt" in card and "--restore-file model.pt" in card

    # where the zoo holds the earlier run's own weights, the chain goes on from the zoo
    res = run_plan(c, zoo, [run("demo.a2", args=("--lr", "1e-12"), after="demo.a")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.a2] zoo:" in res.stdout and "[demo.a2] phase:" not in res.stdout


def test_a_run_offers_the_mean_of_its_last_epochs_where_it_validates_better(campaign):
    c, tmp = campaign, campaign.tmp
    zoo = tmp / "average_zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    res = run_plan(c, zoo, [run("demo.avg", epochs=3, average=2)])
    assert res.returncode == 0, res.stdout + res.stderr
    folder = tmp / "runs" / "demo.avg"
    # the recipe kept the last two epochs' checkpoints, and the average is their mean
    assert sorted(p.name for p in folder.glob("checkpoint[0-9]*.pt")) == \
        ["checkpoint2.pt", "checkpoint3.pt"]
    two, three, avg = (torch.load(folder / n, weights_only=True)["model"]
                       for n in ("checkpoint2.pt", "checkpoint3.pt", "checkpoint_average.pt"))
    tensors = [k for k, v in avg.items() if torch.is_tensor(v) and torch.is_floating_point(v)]
    assert any(not torch.equal(two[k], three[k]) for k in tensors)
    for k in tensors:
        torch.testing.assert_close(avg[k], ((two[k].double() + three[k].double()) / 2).float())
    # both validated once, the better offered (BPC: lower), and the card says which
    seen = json.loads((folder / "state.json").read_text())["average"]
    assert seen["epochs"] == [2, 3]
    chosen = "average" if seen["valid"] < seen["valid_best"] else "best"
    assert seen["chosen"] == chosen and f"offering the {chosen}" in res.stdout
    entry = manifest(zoo)["models"][0]
    card = (zoo / "models" / "demo-char" / "README.md").read_text()
    assert ("mean of the weights of epochs 2-3" in card) == (chosen == "average")
    assert entry["training"].get("averaged_epochs") == ([2, 3] if chosen == "average" else None)
    # a later phase goes on from what it offered
    res = run_plan(c, zoo, [run("demo.avg", epochs=3, average=2),
                            run("demo.avg2", args=("--lr", "1e-12"), after="demo.avg")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validation:" not in res.stdout  # measured once
    start = "checkpoint_average.pt" if chosen == "average" else "checkpoint_best.pt"
    if entry["training"]["run"] == "demo.avg":  # the zoo took it: the chain goes on from there
        assert "[demo.avg2] zoo:" in res.stdout
    else:
        assert f"Loaded checkpoint {folder / start}" in \
            (tmp / "runs" / "demo.avg2" / "train.log").read_text()


def test_failed_update_leaves_nothing(campaign):
    c, tmp, zoo = campaign, campaign.tmp, campaign.zoo
    before = (zoo / "manifest.json").read_bytes()
    res = run_plan(c, zoo, [run("demo.c", entry="demo-broken", dataset="broken")])
    assert res.returncode == 1
    assert "[demo.c] zoo update failed, the zoo is unchanged" in res.stdout
    assert (zoo / "manifest.json").read_bytes() == before
    assert sorted(os.listdir(zoo / "models")) == \
        sorted(m["name"] for m in manifest(zoo)["models"])  # no half-made folder
    assert "considered" not in json.loads((tmp / "runs" / "demo.c" / "state.json").read_text())


def test_a_failed_run_is_skipped_later_saying_how_to_retry(campaign):
    c = campaign
    bad = run("demo.broken", args=("--no-such-option",))
    res = run_plan(c, c.zoo, [bad])
    assert res.returncode == 1, res.stdout + res.stderr
    folder = c.tmp / "runs" / "demo.broken"
    assert f"[demo.broken] fairseq-train exited 2; see {folder}/train.log (remove the folder " \
           "to retry the run)" in res.stdout
    again = run_plan(c, c.zoo, [bad])
    assert "[demo.broken] skipped, it failed before: fairseq-train exited 2" in again.stdout
    assert "remove the folder to retry" in again.stdout


def test_new_entry_must_fit_the_tree(campaign):
    c, zoo = campaign, campaign.zoo
    subprocess.run(["git", "init", "-q", str(zoo)], check=True)
    subprocess.run(["git", "-C", str(zoo), "add", "manifest.json"], check=True)
    before = (zoo / "manifest.json").read_bytes()
    res = run_plan(c, zoo, [run("demo.d", entry="demo-big")], "--tree-limit-mib", "0.01")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[demo.d]" in res.stdout and "not added: a new entry would take the tracked tree " \
        "past 0.01 MiB" in res.stdout
    assert (zoo / "manifest.json").read_bytes() == before
    assert not (zoo / "models" / "demo-big").exists()


def test_an_smnist_run_enters_the_zoo_with_its_test_accuracy(tmp_path, small_mnist):
    """A dataset whose recipe takes its epochs and options (recipes/smnist/train.sh), measured
    by fairseq-validate (accuracy), with no evaluation text: trained, evaluated and added."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text('{"manifest_version": 1, "models": []}\n')
    tiny = ["--pixels-per-step", "28"]
    mnist = {"recipe": "recipes/smnist/train.sh", "folder": small_mnist.name,
             "metric": "accuracy", "text_format": "ptb_char", "eval_text": "",
             "eval_args": ["--task", "sequential_mnist", "--criterion",
                           "sequence_classification", "--valid-subset", "test", *tiny,
                           "--batch-size", "500", "--cpu"],
             "force_anneal": 1,
             "recipe_args": ["{epochs}", "--quantizer", "{quantizer}", "--norm", "{norm}"]}
    c = types.SimpleNamespace(tmp=tmp_path, data_root=str(small_mnist.parent),
                              datasets={"mnist": mnist})
    runs = [dict(run("mnist.a", entry="smnist-tiny", dataset="mnist"),
                 args=[*tiny, "--valid-size", "500", "--hidden-size", "16", "--lr", "0.01"])]
    res = run_plan(c, zoo, runs)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "train.sh " + str(small_mnist) + " " in res.stdout
    assert " 1 --quantizer bc --norm weight --pixels-per-step 28" in res.stdout
    assert "zoo updated: None ->" in res.stdout
    entry = manifest(zoo)["models"][0]
    assert entry["metric"]["name"] == "accuracy" and entry["task"] == "sequential_mnist"
    assert entry["metric"]["command"].startswith("fairseq-validate ")
    assert 10 < entry["metric"]["value"] <= 100  # above chance
    assert "recipes/smnist/train.sh DATA_BIN RUN_DIR 1 --quantizer bc --norm weight" in \
        entry["train_command"]
    assert not any(f["path"].startswith("eval/") for f in entry["files"])
    log = (zoo / "models" / "smnist-tiny" / "logs" / "eval_test.log").read_text()
    assert f"accuracy {entry['metric']['value']}" in log.replace("| accuracy ", "accuracy ")


def test_a_run_goes_on_from_the_zoo_when_its_folder_is_gone(tmp_path):
    """On a machine without the run folder, a run whose own weights are in the zoo starts from
    them at the learning rate it had reached and for the epochs it had left; a finished one is
    not run again."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("nq_campaign_under_test", DRIVER)
    campaign = importlib.util.module_from_spec(spec)
    sys.modules["nq_campaign_under_test"] = campaign  # dataclasses look their module up
    spec.loader.exec_module(campaign)
    run = campaign.PLAN[[r.id for r in campaign.PLAN].index("ptb-word-tc-weight.sgd")]
    zoo_model = str(ROOT / "zoo" / "models" / "ptb-word-tc-weight" / "model.pt")
    record = {"run": run.id, "lr": 5.0, "run_epochs": 6.44, "done": False}
    cmd, start, _ = campaign.train_command(run, str(tmp_path), "data", 3600, zoo_model, record)
    assert start == "zoo" and "--reset-optimizer" in cmd
    assert cmd[cmd.index("--max-epoch") + 1] == str(run.epochs - 6)
    assert cmd[len(cmd) - 1 - cmd[::-1].index("--lr") + 1] == "5"  # the last --lr wins
    plain, _, _ = campaign.train_command(run, str(tmp_path), "data", 3600, zoo_model, None)
    assert plain[plain.index("--max-epoch") + 1] == str(run.epochs) and "5" not in plain
    assert "--force-anneal" not in cmd  # the word schedule is not by epoch

    # a run begun from scratch (not marked from_zoo) goes on from its own published weights
    from nq_plugin.zoo.manifest import Manifest
    chrono = campaign.PLAN[[r.id for r in campaign.PLAN].index("smnist-bc-weight.chrono")]
    assert not chrono.from_zoo
    zoo = Manifest.load()
    zoo.models["smnist-bc-weight"].training = dict(zoo.models["smnist-bc-weight"].training,
                                                   run=chrono.id)  # its record names the run
    assert campaign.own_record(chrono, zoo)["run"] == chrono.id
    assert campaign.bundled_model(chrono, zoo) == str(ROOT / "zoo" / "models" / "smnist-bc-weight"
                                                      / "model.pt")
    other = dataclasses.replace(chrono, id="smnist-bc-weight.other")  # not its weights
    assert campaign.own_record(other, zoo) is None and campaign.bundled_model(other, zoo) is None

    # a char run's per-epoch decay goes on where the run had reached it
    char = campaign.PLAN[[r.id for r in campaign.PLAN].index("warpeace-tc-layer")]
    for done, anneal in ((13.11, "1"), (4.5, "7")):
        record = {"run": char.id, "lr": 0.00104, "run_epochs": done, "done": False}
        cmd, _, _ = campaign.train_command(char, str(tmp_path), "data", 3600, zoo_model, record)
        assert cmd[len(cmd) - 1 - cmd[::-1].index("--force-anneal") + 1] == anneal
        assert cmd[cmd.index("--max-epoch") + 1] == str(char.epochs - int(done))


def test_a_run_gone_on_from_the_zoo_keeps_its_schedule_when_it_resumes(tmp_path):
    """A run that went on from the zoo for the epochs it had left resumes from its folder with
    that same --max-epoch (not the plan's whole run), is done after it, and its zoo record
    counts the epochs it had done before."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("nq_campaign_under_test2", DRIVER)
    campaign = importlib.util.module_from_spec(spec)
    sys.modules["nq_campaign_under_test2"] = campaign
    spec.loader.exec_module(campaign)
    run = campaign.PLAN[[r.id for r in campaign.PLAN].index("ptb-word-tc-weight.sgd")]
    last = tmp_path / "checkpoint_last.pt"
    torch.save({"extra_state": {"train_iterator": {"epoch": 5, "iterations_in_epoch": 0},
                                "previous_training_time": 60.0}}, last)
    state = {"started": "zoo", "prior_run_epochs": 6}
    cmd, start, held = campaign.train_command(run, str(tmp_path), "data", 3600, None, None,
                                              campaign.folder_epochs(run, state))
    assert start == "resume" and held == 60.0
    assert cmd[cmd.index("--max-epoch") + 1] == str(run.epochs - 6)
    at_end = {"epoch": run.epochs - 6 + 1, "iterations": 0}
    assert campaign.finished(at_end, run, state)
    assert not campaign.finished(at_end, run, {})  # the plan's whole run is longer


def test_a_phase_with_a_seed_of_its_own_trains_with_it(tmp_path):
    """A plan entry's seed is the one fairseq-train gets (once: a later --seed would win), and
    the plan's sibling of smnist-bc-weight.again differs from it only in its seed."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("nq_campaign_under_test3", DRIVER)
    campaign = importlib.util.module_from_spec(spec)
    sys.modules["nq_campaign_under_test3"] = campaign
    spec.loader.exec_module(campaign)
    runs = {r.id: r for r in campaign.PLAN}
    first, sibling = runs["smnist-bc-weight.again"], runs["smnist-bc-weight.again.seed2"]
    assert dataclasses.replace(sibling, id=first.id, seed=first.seed) == first
    for run, seed in ((first, "1"), (sibling, "2")):
        cmd, start, _ = campaign.train_command(run, str(tmp_path), "data", 3600, None)
        assert start == "scratch" and cmd.count("--seed") == 1
        assert cmd[cmd.index("--seed") + 1] == seed


def test_the_hardware_line_names_each_phase_once():
    import importlib.util
    spec = importlib.util.spec_from_file_location("nq_campaign_under_test3", DRIVER)
    campaign = importlib.util.module_from_spec(spec)
    sys.modules["nq_campaign_under_test3"] = campaign
    spec.loader.exec_module(campaign)
    here = "CPU X (2 cores): run.sgd of the campaign"
    assert campaign.trained_on_text("", here) == here
    assert campaign.trained_on_text("GPU: 7 epochs", here) == "GPU: 7 epochs; then " + here
    once = "GPU: 7 epochs; then " + here  # gone on from its own entry on the same CPU
    assert campaign.trained_on_text(once, here) == once
    assert campaign.trained_on_text(once, "CPU Y: run.sgd") == once + "; then CPU Y: run.sgd"



def test_the_card_shows_the_commands_a_run_really_ran(tmp_path):
    """A run gone on from its zoo record trains with a learning rate and epochs of its own: the
    card's command is that one, by placeholder, and a resume that repeats it is not listed
    twice."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("nq_campaign_under_test4", DRIVER)
    campaign = importlib.util.module_from_spec(spec)
    sys.modules["nq_campaign_under_test4"] = campaign
    spec.loader.exec_module(campaign)
    run = campaign.PLAN[[r.id for r in campaign.PLAN].index("warpeace-tc-layer")]
    zoo_model = str(ROOT / "zoo" / "models" / "ptb-char-tc-weight" / "model.pt")
    record = {"run": run.id, "lr": 0.00104, "run_epochs": 13.11, "done": False}
    cmd, _, _ = campaign.train_command(run, str(tmp_path / "run"), "/data", 3600, zoo_model,
                                       record)
    shown = campaign.card_command(cmd, run, str(tmp_path / "run"), "/data", zoo_model)
    assert shown.startswith(f"bash {run.data.recipe} DATA_BIN RUN_DIR ")
    assert f"--max-epoch {run.epochs - 13} " in shown and "--lr 0.00104" in shown
    assert "--restore-file model.pt --reset-optimizer" in shown
    assert str(tmp_path) not in shown and str(ROOT) not in shown
    assert "--stop-time-hours" not in shown
    state = {}
    campaign.note_command(state, shown)
    campaign.note_command(state, shown)  # resumed from checkpoint_last.pt: the same command
    campaign.note_command(state, shown + " --lr 1e-4")
    assert state["commands"] == [shown, shown + " --lr 1e-4"]


def test_a_resume_is_not_listed_as_a_phase_of_its_own(tmp_path, monkeypatch):
    """A phase begun from an earlier phase's checkpoint and resumed in a later session from its
    checkpoint_last.pt runs its command without the starting checkpoint: the card lists the
    phase once, as it began (a resume listed it twice, the second as if trained again)."""
    campaign = campaign_module()
    run = campaign.PLAN[[r.id for r in campaign.PLAN].index("smnist-bc-weight.cont2.more.anneal")]
    folder, prev = str(tmp_path / "run"), str(tmp_path / "prev" / "checkpoint_average.pt")
    # the checkpoints' training seconds (read for the time budget): none, without checkpoints
    monkeypatch.setattr(campaign, "checkpoint_progress", lambda path: {"seconds": 0.0})
    began = campaign.card_command(campaign.train_command(run, folder, "/data", 3600, prev)[0],
                                  run, folder, "/data", prev)
    assert "--restore-file PREV_RUN_DIR/checkpoint_average.pt --reset-optimizer" in began
    os.makedirs(folder)
    open(os.path.join(folder, "checkpoint_last.pt"), "wb").close()
    cmd, start, _ = campaign.train_command(run, folder, "/data", 3600, None)
    resumed = campaign.card_command(cmd, run, folder, "/data", None)
    assert start == "resume" and "--restore-file" not in resumed
    state = {}
    campaign.note_command(state, began)
    campaign.note_command(state, resumed)
    assert state["commands"] == [began]
    campaign.note_command(state, resumed + " --lr 1e-4")  # another command is listed
    assert state["commands"] == [began, resumed + " --lr 1e-4"]


@pytest.mark.parametrize("average_wins", [True, False])
def test_the_offered_checkpoint_is_the_better_validated(tmp_path, monkeypatch, average_wins):
    """offered(): the mean of the last epochs' weights where its validation (accuracy: higher)
    beats the best checkpoint's, else the best; measured once; the commands say so only when
    the mean was offered; too few epoch checkpoints: the best."""
    c = campaign_module()
    folder = tmp_path / "r"
    folder.mkdir()

    def save(name, epoch, w):
        torch.save({"model": {"w": torch.tensor(w), "steps": torch.tensor(7)},
                    "extra_state": {"train_iterator": {"epoch": epoch,
                                                       "iterations_in_epoch": 0}}},
                   folder / name)
    save("checkpoint2.pt", 3, [1.0, 4.0])
    save("checkpoint3.pt", 4, [3.0, 0.0])
    save("checkpoint_last.pt", 4, [3.0, 0.0])
    save("checkpoint_best.pt", 3, [1.0, 4.0])
    c.write_state(str(folder), {"done": True, "commands": ["train it"]})
    calls = []

    def validate(run, checkpoint, data_root):
        calls.append(os.path.basename(checkpoint))
        is_average = checkpoint.endswith(c.AVERAGE)
        return 98.0 if is_average == average_wins else 97.0
    monkeypatch.setattr(c, "valid_metric", validate)
    run = c.Run("r", "e", "mnist", "bc", "layer", 3, None, None, "s", average=2)
    got = c.offered(run, str(folder), str(tmp_path), log=lambda m: None)
    mean = torch.load(folder / c.AVERAGE, weights_only=True)["model"]
    assert torch.equal(mean["w"], torch.tensor([2.0, 2.0])) and int(mean["steps"]) == 7
    assert os.path.basename(got) == (c.AVERAGE if average_wins else "checkpoint_best.pt")
    state = c.read_state(str(folder))
    assert state["average"]["epochs"] == [2, 3]
    assert state["average"]["chosen"] == ("average" if average_wins else "best")
    assert any("mean of the weights of epochs 2-3" in line
               for line in c.run_commands(state)) == average_wins
    assert c.offered(run, str(folder), str(tmp_path), log=lambda m: None) == got
    assert sorted(calls) == sorted([c.AVERAGE, "checkpoint_best.pt"])  # measured once
    wider = c.Run("r", "e", "mnist", "bc", "layer", 3, None, None, "s", average=3)
    assert c.averaged_epochs(wider, str(folder)) is None  # checkpoint1.pt is not there
