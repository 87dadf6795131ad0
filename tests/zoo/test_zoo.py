"""The zoo: manifest, verified downloads (bundled and from a local Hub stand-in), publishing,
cards, fairseq's own Hub loader, and the nq-zoo commands. No network is used."""
import json
import os
import pickle
import shutil

import pytest
import torch

from tests.fairseq_utils import ROOT, console
from tests.zoo.conftest import NAME, REPO

from nq_plugin.zoo.fetch import download
from nq_plugin.zoo.manifest import Manifest, ZooError


def zoo_copy(tmp_path, tiny_zoo, revision=None):
    """A private copy of the tiny zoo whose manifest pins ``revision``."""
    root, _, _ = tiny_zoo
    dst = tmp_path / "zoo"
    shutil.copytree(root, dst)
    data = json.loads((dst / "manifest.json").read_text())
    data["models"][0]["revision"] = revision
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst, Manifest.load(str(dst / "manifest.json")).get(NAME)


@pytest.fixture()
def online(monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)


def file_requests(hub):
    return [r for r in hub.requests if "/resolve/" in r[1]]


def test_pinned_download_verifies_and_second_call_makes_no_request(
        tmp_path, tiny_zoo, published, online):
    hub, commit = published
    _, entry = zoo_copy(tmp_path, tiny_zoo, commit)
    folder = download(entry, cache_dir=tmp_path / "cache", endpoint=hub.endpoint,
                      use_bundled=False)
    assert commit in folder and os.path.isfile(os.path.join(folder, "model.pt"))
    assert os.path.isfile(os.path.join(folder, "packed", "model.safetensors"))
    n = len(file_requests(hub))
    assert n >= len(entry.files)
    assert download(entry, cache_dir=tmp_path / "cache", endpoint=hub.endpoint,
                    use_bundled=False) == folder
    assert len(file_requests(hub)) == n  # pinned by commit: served from the cache


@pytest.mark.parametrize("damage", ["same_size", "truncated"])
def test_damaged_download_is_rejected_and_removed_from_cache(
        tmp_path, tiny_zoo, published, online, damage):
    hub, commit = published
    root, entry = zoo_copy(tmp_path, tiny_zoo, commit)
    good = (root / entry.bundled / "model.pt").read_bytes()
    bad = bytearray(good)
    if damage == "same_size":
        bad[len(bad) // 2] ^= 0xFF
    else:
        bad = bad[: len(bad) // 2]
    hub.tamper["model.pt"] = bytes(bad)
    with pytest.raises(ZooError, match="model.pt does not match the manifest") as err:
        download(entry, cache_dir=tmp_path / "cache", endpoint=hub.endpoint, use_bundled=False)
    assert ("same size, different bytes" in str(err.value)) == (damage == "same_size")
    cached = [p for p in (tmp_path / "cache").rglob("model.pt")]
    assert cached == []  # the bad copy is gone, nothing else was touched
    assert (root / entry.bundled / "model.pt").read_bytes() == good
    hub.tamper.clear()
    folder = download(entry, cache_dir=tmp_path / "cache", endpoint=hub.endpoint,
                      use_bundled=False)
    assert open(os.path.join(folder, "model.pt"), "rb").read() == good


def test_offline_with_empty_cache_is_a_clear_error(tmp_path, tiny_zoo, published, monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    hub, commit = published
    _, entry = zoo_copy(tmp_path, tiny_zoo, commit)
    with pytest.raises(ZooError, match="not in the cache and the Hub cannot be reached"):
        download(entry, cache_dir=tmp_path / "cache", endpoint=hub.endpoint, use_bundled=False)


def test_server_down_with_warm_cache_still_works(tmp_path, tiny_zoo, published, online):
    hub, commit = published
    _, entry = zoo_copy(tmp_path, tiny_zoo, commit)
    folder = download(entry, cache_dir=tmp_path / "cache", endpoint=hub.endpoint,
                      use_bundled=False)
    endpoint = hub.endpoint
    hub.stop()
    hub.stop = lambda: None
    assert download(entry, cache_dir=tmp_path / "cache", endpoint=endpoint,
                    use_bundled=False) == folder


def test_unreachable_hub_is_reported_after_one_bounded_attempt(tmp_path, tiny_zoo, online):
    import socket
    import time
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _, entry = zoo_copy(tmp_path, tiny_zoo, "a" * 40)
    start = time.monotonic()
    with pytest.raises(ZooError, match="cannot be reached .*offline"):
        download(entry, cache_dir=tmp_path / "cache", endpoint=endpoint, use_bundled=False)
    assert time.monotonic() - start < 10  # the client alone retries for about two minutes


def test_publish_without_a_token_is_one_line_and_exit_2(tmp_path, tiny_zoo, hub):
    root, entry = zoo_copy(tmp_path, tiny_zoo, None)
    hub.require_token = True
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(NQ_ZOO_DIR=str(root), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_TELEMETRY="1")
    res = console("nq-zoo", "publish", root / entry.bundled, "--repo-id", "org/x",
                  "--endpoint", hub.endpoint, env=env, check=False)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0] and "Traceback" not in res.stderr, lines
    assert Manifest.load(str(root / "manifest.json")).get(NAME).revision is None


def test_wrong_revision_is_a_clear_error(tmp_path, tiny_zoo, published, online):
    hub, commit = published
    _, entry = zoo_copy(tmp_path, tiny_zoo, commit)
    with pytest.raises(ZooError, match="not found"):
        download(entry, revision="f" * 40, cache_dir=tmp_path / "cache", endpoint=hub.endpoint,
                 use_bundled=False)


def test_bundled_model_needs_no_server(tiny_zoo):
    root, entry, env = tiny_zoo
    env = dict(env, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    res = console("nq-zoo", "download", NAME, env=env)
    assert "verified" in res.stdout and str(root / entry["bundled"]) in res.stdout


def test_damaged_bundled_copy_of_unpublished_model_is_a_clear_error(tmp_path, tiny_zoo):
    root, entry = zoo_copy(tmp_path, tiny_zoo, None)
    (root / entry.bundled / "dict.txt").write_text("tampered\n")
    with pytest.raises(ZooError, match="not published on the Hub yet"):
        download(entry)  # NQ_ZOO_DIR is not set: the bundled folder is resolved from manifest


def test_load_refuses_a_code_executing_checkpoint(tmp_path, tiny_zoo):
    from nq_plugin.checkpoint import CheckpointError
    from nq_plugin.zoo import load
    root, entry, _ = tiny_zoo
    folder = tmp_path / "evil"
    shutil.copytree(root / entry["bundled"], folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    state = torch.load(folder / "model.pt", weights_only=True)
    state["extra"] = Evil()
    with open(folder / "model.pt", "wb") as f:
        torch.save(state, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refusing"):
        load(str(folder))
    assert not (tmp_path / "pwned").exists()


def test_publish_create_commit_tag_and_manifest_pin(tmp_path, tiny_zoo, hub):
    root, entry = zoo_copy(tmp_path, tiny_zoo, None)
    env = dict(os.environ, NQ_ZOO_DIR=str(root), HF_TOKEN="hf_test_token", HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_TELEMETRY="1")
    res = console("nq-zoo", "publish", root / entry.bundled, "--repo-id", "org/published",
                  "--endpoint", hub.endpoint, env=env)
    commit = hub.repos["org/published"]["refs"]["main"]
    assert commit in res.stdout
    files = hub.repos["org/published"]["commits"][commit]
    assert set(files) == {f.path for f in entry.files} | {"README.md"}
    assert files["model.pt"] == (root / entry.bundled / "model.pt").read_bytes()
    assert b"org/published" in files["README.md"]
    assert [t["revision"] for t in hub.tags] == [commit]
    pinned = Manifest.load(str(root / "manifest.json")).get(NAME)
    assert (pinned.revision, pinned.repo_id) == (commit, "org/published")


def test_publish_dry_run_writes_the_exact_folder(tmp_path, tiny_zoo, hub):
    root, entry = zoo_copy(tmp_path, tiny_zoo, None)
    env = dict(os.environ, NQ_ZOO_DIR=str(root))
    out = tmp_path / "dry"
    console("nq-zoo", "publish", root / entry.bundled, "--repo-id", "org/x", "--dry-run", out,
            "--endpoint", hub.endpoint, env=env)
    written = {str(p.relative_to(out)).replace(os.sep, "/") for p in out.rglob("*")
               if p.is_file()}
    assert written == {f.path for f in entry.files} | {"README.md"}
    assert hub.requests == []  # nothing was sent
    assert Manifest.load(str(root / "manifest.json")).get(NAME).revision is None


def test_card_metadata_parses_back(tiny_zoo):
    from huggingface_hub import ModelCard
    root, entry, _ = tiny_zoo
    card = ModelCard.load(str(root / entry["bundled"] / "README.md"))
    result = card.data.eval_results[0]
    assert result.metric_type == "bpc" and result.dataset_split == "test"
    assert result.metric_value == pytest.approx(entry["metric"]["value"], abs=1e-4)
    assert card.data.library_name == "fairseq"
    for f in entry["files"]:
        assert f["sha256"] in card.text
    assert "1.5" in card.text and entry["metric"]["command"] in card.text


def test_fairseq_hub_loader_on_the_stand_in(tmp_path, published, online):
    import nq_plugin  # noqa: F401  registers the model
    from fairseq import checkpoint_utils
    hub, commit = published
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task_from_hf_hub(
        REPO, cache_dir=str(tmp_path / "cache"), revision=commit, endpoint=hub.endpoint)
    assert len(models) == 1 and type(models[0]).__name__ == "NQLSTMLanguageModel"
    assert len(task.target_dictionary) == len(task.source_dictionary) > 4


@pytest.mark.slow
def test_eval_sample_and_list_commands(tiny_zoo):
    root, entry, env = tiny_zoo
    res = console("nq-zoo", "eval", NAME, env=env)
    assert "bits per character" in res.stdout and "KB" in res.stdout and "sample" in res.stdout
    packed = console("nq-zoo", "eval", NAME, "--packed", "--no-sample", env=env)
    value = lambda out: float(out.split("bits per character: ")[1].split()[0])  # noqa: E731
    assert value(packed.stdout) == pytest.approx(value(res.stdout), abs=1e-3)
    res = console("nq-zoo", "sample", NAME, "--prompt", "the fox", "--length", "40", env=env)
    assert res.stdout.startswith("the fox") and len(res.stdout.strip()) > len("the fox") + 20
    packed = console("nq-zoo", "sample", NAME, "--prompt", "the fox", "--length", "40",
                     "--packed", env=env)
    assert packed.stdout == res.stdout  # same seed, same text
    res = console("nq-zoo", "list", env=env)
    assert NAME in res.stdout and f"{entry['metric']['value']:.3f}" in res.stdout
    res = console("nq-zoo", "eval", "no-such-model", env=env, check=False)
    assert res.returncode == 2 and "nq-zoo list" in res.stderr and "Traceback" not in res.stderr


def test_score_and_sample_api_match_for_packed_and_unpacked(tiny_zoo):
    from nq_plugin.zoo import load
    root, entry, _ = tiny_zoo
    lm = load(str(root / entry["bundled"]))
    packed = load(str(root / entry["bundled"]), packed=True)
    text = "the fox quickly picked it up"
    assert lm.score(text)["bits_per_symbol"] == pytest.approx(
        packed.score(text)["bits_per_symbol"], abs=1e-4)
    assert lm.sample("the", length=30, seed=3) == packed.sample("the", length=30, seed=3)


def test_sample_is_the_incremental_decoders_multinomial_draws(tiny_zoo):
    """ZooLM.sample's loop draws what fairseq's incremental decoding and torch.multinomial
    give under the same seed (the loop before it sent the whole prefix through the decoder's
    incremental-state dict at every step)."""
    from nq_plugin.zoo import load
    from nq_plugin.zoo.text_formats import decode, encode, text_format
    root, entry, _ = tiny_zoo
    lm = load(str(root / entry["bundled"]))
    d = lm.dictionary
    banned = text_format(lm.text_format).banned(d)
    symbols = encode(lm.text_format, "the")
    tokens = torch.tensor([[d.eos()] + [d.index(s) for s in symbols]])
    gen, state, drawn = torch.Generator().manual_seed(5), {}, []
    with torch.no_grad():
        for _ in range(25):
            logits = lm.decoder(tokens, incremental_state=state)[0][0, -1] / 0.7
            logits[banned] = -float("inf")
            drawn.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
            tokens = torch.cat([tokens, tokens.new_tensor([[drawn[-1]]])], 1)
    expected = decode(lm.text_format, symbols + [d[i] for i in drawn])
    assert lm.sample("the", length=25, temperature=0.7, seed=5) == expected


@pytest.mark.slow
def test_add_packed_bundles_a_packed_copy_for_a_model_without_one(tiny_zoo, demo_char_data,
                                                                  tmp_path):
    """nq-zoo add-packed: packs model.pt, evaluates the copy, lists its files (checksums) and
    says so on the card; refuses to redo it without --force."""
    root, entry, env = tiny_zoo
    zoo = tmp_path / "zoo"
    shutil.copytree(root, zoo)
    env = dict(env, NQ_ZOO_DIR=str(zoo))
    manifest = json.loads((zoo / "manifest.json").read_text())
    item = manifest["models"][0]
    item["files"] = [f for f in item["files"] if not f["path"].startswith("packed/")
                     and f["path"] != "logs/eval_test_packed.log"]
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    folder = zoo / item["bundled"]
    shutil.rmtree(folder / "packed")
    res = console("nq-zoo", "add-packed", NAME, "--data", demo_char_data, env=env)
    assert "bit-packed copy" in res.stdout
    item = json.loads((zoo / "manifest.json").read_text())["models"][0]
    listed = {f["path"] for f in item["files"]}
    assert {"packed/checkpoint.pt", "packed/model.safetensors", "packed/config.json",
            "logs/eval_test_packed.log"} <= listed
    assert "`packed/`" in (folder / "README.md").read_text()
    unpacked = console("nq-zoo", "eval", NAME, "--no-sample", env=env).stdout
    packed = console("nq-zoo", "eval", NAME, "--packed", "--no-sample", env=env).stdout
    value = lambda out: float(out.split("bits per character: ")[1].split()[0])  # noqa: E731
    assert value(packed) == pytest.approx(value(unpacked), abs=1e-3)
    again = console("nq-zoo", "add-packed", NAME, "--data", demo_char_data, env=env, check=False)
    assert again.returncode != 0 and "--force" in again.stderr


def unbundled_zoo(tmp_path, tiny_zoo):
    """A private zoo whose manifest lists the packed copy with ``bundled: false`` and whose
    bundled folder leaves it out (as the word model's)."""
    root, entry, env = tiny_zoo
    zoo = tmp_path / "zoo"
    shutil.copytree(root, zoo)
    data = json.loads((zoo / "manifest.json").read_text())
    for f in data["models"][0]["files"]:
        if f["path"].startswith("packed/"):
            f["bundled"] = False
    (zoo / "manifest.json").write_text(json.dumps(data))
    shutil.rmtree(zoo / entry["bundled"] / "packed")
    entry = Manifest.load(str(zoo / "manifest.json")).get(NAME)
    return zoo, entry, dict(env, NQ_ZOO_DIR=str(zoo), NQ_ZOO_CACHE=str(tmp_path / "cache"))


@pytest.mark.slow
def test_unbundled_packed_copy_is_rebuilt_verified_and_cached(tmp_path, tiny_zoo, monkeypatch):
    from nq_plugin.files import sha256_file
    from nq_plugin.zoo.derive import packed_folder
    zoo, entry, env = unbundled_zoo(tmp_path, tiny_zoo)
    assert {f.path for f in entry.unbundled()} == {
        "packed/checkpoint.pt", "packed/config.json", "packed/dict.txt",
        "packed/model.safetensors"}
    listed = entry.to_json()["files"]  # the default (bundled) is not written out
    assert all(("bundled" in f) == f["path"].startswith("packed/") for f in listed)
    monkeypatch.setenv("NQ_ZOO_DIR", str(zoo))
    folder = download(entry)  # the bundle without packed/ is a complete, verified copy
    assert folder == str(zoo / entry.bundled) and not os.path.exists(os.path.join(folder, "packed"))
    from nq_plugin.zoo import load
    with pytest.raises(ZooError, match="no packed copy.*zoo name"):
        load(folder, packed=True)  # a folder path: nothing to rebuild from a manifest
    res = console("nq-zoo", "download", NAME, env=env).stdout
    assert f"{len(entry.files) - 4} files verified" in res and "4 packed files are not bundled" in res
    # the command rebuilds the copy into NQ_ZOO_CACHE; its files are the published bytes, so
    # it evaluates as the bundled copy did (test_eval_sample_and_list_commands)
    packed = console("nq-zoo", "eval", NAME, "--packed", "--no-sample", env=env).stdout
    assert "(packed)" in packed and "bits per character: " in packed
    cached = packed_folder(entry, folder, str(tmp_path / "cache"))
    assert cached.startswith(str(tmp_path / "cache"))
    for f in entry.unbundled():
        assert sha256_file(os.path.join(cached, f.path[len("packed/"):])) == f.sha256
    import nq_plugin.packed.export as pack  # a verified cached copy is used as it is

    def no_packing(*args, **kwargs):
        raise AssertionError("packed again")
    monkeypatch.setattr(pack, "pack_checkpoint", no_packing)
    assert packed_folder(entry, folder, str(tmp_path / "cache")) == cached
    out = tmp_path / "dry"  # publishing uploads the rebuilt files like any other
    console("nq-zoo", "publish", zoo / entry.bundled, "--repo-id", "org/x", "--dry-run", out,
            env=env)
    for f in entry.files:
        assert sha256_file(str(out / f.path)) == f.sha256


def test_rebuilt_packed_copy_that_differs_is_refused_and_removed(tmp_path, tiny_zoo):
    from nq_plugin.zoo.derive import packed_folder
    zoo, entry, env = unbundled_zoo(tmp_path, tiny_zoo)
    entry.file("packed/model.safetensors").sha256 = "0" * 64  # as if nq-pack had changed
    cache = tmp_path / "cache"
    with pytest.raises(ZooError, match="differs from the published one.*model.safetensors"):
        packed_folder(entry, str(zoo / entry.bundled), str(cache))
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # nothing half-made is left
    data = json.loads((zoo / "manifest.json").read_text())
    data["models"][0]["files"][0]["bundled"] = False  # only packed/ files can be rebuilt
    assert not data["models"][0]["files"][0]["path"].startswith("packed/")
    (zoo / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ZooError, match="only the packed copy"):
        Manifest.load(str(zoo / "manifest.json"))


def test_bundled_word_model_packed_copy_rebuilds_to_the_published_bytes(tmp_path):
    """The real zoo: ptb-word-tc-weight's packed copy is not bundled (24 MB); rebuilt here it
    matches every published sha256 (checked inside packed_folder), and scores as the unpacked
    model."""
    from nq_plugin.zoo import load
    from nq_plugin.zoo.derive import packed_folder
    entry = Manifest.load().get("ptb-word-tc-weight")
    assert entry.unbundled(), "the word model's packed copy is expected to be left out"
    folder = download(entry)
    cached = packed_folder(entry, folder, str(tmp_path))
    assert os.path.isfile(os.path.join(cached, "checkpoint.pt"))
    text = "the company said it expects to report a loss"
    packed = load("ptb-word-tc-weight", packed=True, cache_dir=str(tmp_path))
    unpacked = load("ptb-word-tc-weight")
    assert packed.score(text)["bits_per_symbol"] == pytest.approx(
        unpacked.score(text)["bits_per_symbol"], abs=1e-4)


def _tampered_model(path):
    """The same checkpoint with one latent weight nudged: same size, valid archive, and
    fairseq's loader alone would read it without complaint."""
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if k.endswith("weight_hh"))
    state["model"][key] = state["model"][key].clone()
    state["model"][key][0, 0] += 1 if not state["model"][key].is_floating_point() else 1e-3
    out = path.parent / "tampered.pt"
    torch.save(state, out)
    return out


def test_zoo_checkpoints_carry_a_digest_that_every_path_verifies(tmp_path, tiny_zoo):
    from nq_plugin.checkpoint import DIGEST_KEY, tensor_digest
    from nq_plugin.models.loading import load_model
    root, entry, env = tiny_zoo
    folder = root / entry["bundled"]
    for ckpt in (folder / "model.pt", folder / "packed" / "checkpoint.pt"):
        weights = torch.load(ckpt, weights_only=True)["model"]
        assert weights[DIGEST_KEY] == tensor_digest(
            {k: v for k, v in weights.items() if k != DIGEST_KEY})
        load_model(str(ckpt))  # verified and loaded
    bad = _tampered_model(folder / "model.pt")
    with pytest.raises(Exception, match="tampered.pt: its tensors do not match the sha256"):
        load_model(str(bad))
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    res = console("fairseq-eval-lm", data, "--user-dir", ROOT / "nq_plugin", "--task", "bptt_lm",
                  "--path", bad, "--cpu", "--gen-subset", "test", "--tokens-per-sample", "16",
                  check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out and "tampered.pt" in out, out[-2000:]
    assert "do not match the sha256 digest" in out


def test_fairseq_hub_loader_refuses_a_tampered_download(tmp_path, tiny_zoo, published, online):
    import nq_plugin  # noqa: F401  registers the model
    from fairseq import checkpoint_utils
    hub, commit = published
    root, entry, _ = tiny_zoo
    hub.tamper["model.pt"] = _tampered_model(root / entry["bundled"] / "model.pt").read_bytes()
    with pytest.raises(Exception, match=r"model\.pt: its tensors do not match the sha256"):
        checkpoint_utils.load_model_ensemble_and_task_from_hf_hub(
            REPO, cache_dir=str(tmp_path / "cache"), revision=commit, endpoint=hub.endpoint)


@pytest.mark.slow
def test_add_digest_seals_an_older_bundled_model(tmp_path, tiny_zoo):
    """A bundled model from before checkpoints carried a digest: add-digest writes it, its
    packed copy is sealed too, the tensors and the card's number are unchanged, the manifest's
    records match the new files."""
    from nq_plugin.checkpoint import DIGEST_KEY
    from nq_plugin.zoo.fetch import verify_folder
    from nq_plugin.files import sha256_file
    root, entry = zoo_copy(tmp_path, tiny_zoo, None)
    folder = root / entry.bundled
    state = torch.load(folder / "model.pt", weights_only=True)
    del state["model"][DIGEST_KEY]  # as the zoo's older checkpoints are
    torch.save(state, folder / "model.pt")
    data = json.loads((root / "manifest.json").read_text())
    rec = next(f for f in data["models"][0]["files"] if f["path"] == "model.pt")
    rec.update(sha256=sha256_file(folder / "model.pt"), size=(folder / "model.pt").stat().st_size)
    (root / "manifest.json").write_text(json.dumps(data))
    env = dict(os.environ, NQ_ZOO_DIR=str(root), HF_HUB_OFFLINE="1")
    before = console("nq-zoo", "eval", NAME, "--no-sample", env=env).stdout
    console("nq-zoo", "add-digest", NAME, env=env)
    for ckpt in (folder / "model.pt", folder / "packed" / "checkpoint.pt"):
        assert DIGEST_KEY in torch.load(ckpt, weights_only=True)["model"]
    sealed = Manifest.load(str(root / "manifest.json")).get(NAME)
    assert verify_folder(sealed, str(folder)) == []
    after = console("nq-zoo", "eval", NAME, "--no-sample", env=env).stdout
    line = lambda out: next(l for l in out.splitlines() if "bits per character" in l)  # noqa
    assert line(after) == line(before)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_unbundle_packed_leaves_a_verified_rebuildable_copy(tmp_path, tiny_zoo, monkeypatch):
    from nq_plugin.zoo.derive import packed_folder
    from nq_plugin.files import sha256_file
    root, entry = zoo_copy(tmp_path, tiny_zoo, None)
    env = dict(os.environ, NQ_ZOO_DIR=str(root), HF_HUB_OFFLINE="1")
    console("nq-zoo", "unbundle-packed", NAME, env=env)
    folder = root / entry.bundled
    assert not (folder / "packed").exists()
    monkeypatch.setenv("NQ_ZOO_DIR", str(root))
    listed = Manifest.load(str(root / "manifest.json")).get(NAME)
    packed = [f for f in listed.files if f.path.startswith("packed/")]
    assert packed and all(not f.bundled for f in packed)
    assert download(listed) == str(folder)  # the bundle is complete without packed/
    rebuilt = packed_folder(listed, str(folder), cache_dir=str(tmp_path / "cache"))
    for f in packed:
        assert sha256_file(os.path.join(rebuilt, f.path[len("packed/"):])) == f.sha256
    # a packed copy nq-pack would not rebuild byte for byte stays bundled
    root2, entry2 = zoo_copy(tmp_path / "b", tiny_zoo, None)
    with open(root2 / entry2.bundled / "packed" / "config.json", "a") as fh:
        fh.write(" ")
    data = json.loads((root2 / "manifest.json").read_text())
    for f in data["models"][0]["files"]:
        if f["path"] == "packed/config.json":
            p = root2 / entry2.bundled / "packed" / "config.json"
            f.update(sha256=sha256_file(p), size=p.stat().st_size)
    (root2 / "manifest.json").write_text(json.dumps(data))
    res = console("nq-zoo", "unbundle-packed", NAME, env=dict(env, NQ_ZOO_DIR=str(root2)),
                  check=False)
    assert res.returncode == 2 and "does not rebuild the listed packed copy" in res.stderr
    assert (root2 / entry2.bundled / "packed" / "config.json").exists()


def test_every_bundled_model_stores_quantized_weights_equal_to_the_trained_ones():
    """The real zoo: each model.pt stored compactly (nq_plugin/storage.py) decodes to latent
    weights whose quantized weights are the trained model's, bit for bit (their sha256 was
    taken from the trained fp32 latents when the entry was built), and holds the encodings its
    manifest record lists."""
    from nq_plugin.models.loading import load_model
    from nq_plugin.storage import quantized_digest, storage_encodings
    entries = [e for e in Manifest.load().models.values() if e.storage and e.bundled]
    assert len(entries) >= 6
    for entry in entries:
        path = os.path.join(download(entry), entry.checkpoint)
        model, state = load_model(path)
        exact = [n for names in entry.storage["exact"].values() for n in names]
        if exact:
            assert quantized_digest(model, exact) == entry.storage["quantized_sha256"], \
                entry.name
        listed = {n: enc for kind in ("exact", "lossy")
                  for enc, names in entry.storage[kind].items() for n in names}
        assert storage_encodings(state["model"]) == listed, entry.name
        if entry.quantizer in ("bc", "tc"):  # W_h, and W_x where it is quantized (not for
            # sequential MNIST's one-pixel inputs, as the paper)
            from nq_plugin.nn.lstm import NQLSTMLayer
            layers = [m for m in model.modules() if isinstance(m, NQLSTMLayer)]
            assert len(exact) == sum(1 + int(layer.quantize_input) for layer in layers), \
                entry.name


@pytest.mark.slow
def test_compact_rebuilds_an_entry_from_its_own_files(tmp_path, tiny_zoo, demo_char_data):
    """nq-zoo compact: from fp32 latents (--no-compact) to int8 ones and back the test number,
    the quantized weights and the training log stay; the packed copy and card are rebuilt
    and verified, one storage sentence on the card, no temporary folder left."""
    from nq_plugin.zoo.fetch import verify_folder
    root, _ = zoo_copy(tmp_path, tiny_zoo, None)
    env = dict(os.environ, NQ_ZOO_DIR=str(root), HF_HUB_OFFLINE="1")
    path = str(root / "manifest.json")
    first = Manifest.load(path).get(NAME)
    console("nq-zoo", "compact", NAME, "--data", demo_char_data, "--no-compact", env=env)
    loose = Manifest.load(path).get(NAME)
    folder = root / loose.bundled
    assert loose.storage["exact"] == {} and loose.file("model.pt").size > \
        first.file("model.pt").size
    console("nq-zoo", "compact", NAME, "--data", demo_char_data, env=env)
    tight = Manifest.load(path).get(NAME)
    assert "quantized_sha256" not in loose.storage  # nothing stored exactly-but-compact
    assert tight.metric.value == loose.metric.value == first.metric.value
    assert tight.storage["quantized_sha256"] == first.storage["quantized_sha256"]
    assert tight.file("model.pt").sha256 == first.file("model.pt").sha256  # reproducible
    assert verify_folder(tight, str(folder)) == []
    assert tight.notes.count("`model.pt` stores") == 1 and "int8" in tight.notes
    assert tight.notes.count("The bit-packed copy") == 1
    assert (folder / "logs" / "valid.txt").exists()
    assert [p.name for p in root.glob("models/.*")] == []



@pytest.mark.slow
def test_compacting_a_lossy_bundle_again_keeps_the_trained_models_number(
        tmp_path, tiny_zoo, demo_char_data, monkeypatch):
    """A bundle whose model.pt is already stored lossily is not the trained model: compacting
    it again (here int6 rows, then int4) keeps the trained model's evaluation as the card's
    "before" and measures the new storage on the test split."""
    import nq_plugin.storage as storage
    from nq_plugin.zoo.build import compact_entry
    from nq_plugin.zoo.fetch import verify_folder
    root, _ = zoo_copy(tmp_path, tiny_zoo, None)
    monkeypatch.setenv("NQ_ZOO_DIR", str(root))
    monkeypatch.setattr(storage, "LARGE_TENSOR", 1024)  # the tiny model's softmax is lossy
    first = compact_entry(NAME, demo_char_data, floats="int6_rows")
    log = root / first.bundled / "logs" / "eval_test_uncompacted.log"
    trained_log = log.read_bytes()
    assert first.storage["lossy"] == {"int6_rows": ["decoder.output_projection.weight"]}
    trained = first.storage["uncompacted_metric"]
    second = compact_entry(NAME, demo_char_data, floats="int4_rows")
    assert second.storage["lossy"] == {"int4_rows": ["decoder.output_projection.weight"]}
    assert second.storage["uncompacted_metric"] == trained and log.read_bytes() == trained_log
    assert f"{trained:.4f} before, {second.metric.value:.4f} as stored" in second.notes
    assert "4-bit integers (bit-packed)" in second.notes
    assert verify_folder(second, str(root / second.bundled)) == []
def test_a_checkpoint_evaluation_already_made_is_read_not_run(tmp_path):
    """nq-zoo add --checkpoint-eval-log (the campaign's decision evaluation): its number is
    read from the log; a log made with other options is refused, naming the fix."""
    from nq_plugin.zoo.build import EntrySpec, checkpoint_evaluation
    args = ["--task", "bptt_lm", "--gen-subset", "test", "--cpu"]
    log = tmp_path / "eval.log"
    log.write_text("$ fairseq-eval-lm DATA_BIN --user-dir NQ_PLUGIN_DIR --path model.pt "
                   + " ".join(args) + "\n... | Loss (base 2): 6.4991, Perplexity: 90.49\n")
    spec = EntrySpec(name="x", checkpoint=str(tmp_path / "absent.pt"), data=str(tmp_path),
                     dataset="d", repo_id="r/x", metric="perplexity", eval_args=args,
                     epochs=1, trained_on="t", train_command="c", checkpoint_eval=str(log))
    r = checkpoint_evaluation(spec, "fairseq-eval-lm")  # the checkpoint does not exist: read
    assert r.value == 90.49 and r.log == log.read_text()
    spec.eval_args = args + ["--batch-size", "16"]
    with pytest.raises(ZooError, match="not a fairseq-eval-lm log made with the entry's options"):
        checkpoint_evaluation(spec, "fairseq-eval-lm")
