"""A wheel of the project, installed non-editable in a fresh venv, reaches the zoo: the manifest
ships inside the package, `nq-zoo list` shows every model, and a model published to the local
Hub stand-in downloads and verifies. The fresh venv borrows this venv's dependencies through a
.pth line (whose own .pth files -- the editable install's -- are not processed), so it imports
nq_plugin from the wheel alone."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.fairseq_utils import ROOT
from tests.zoo.conftest import NAME

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: building in the checkout would leave build/ behind
    top = {".git", ".venv", "zoo", "tests", "benchmarks", "build", "dist"}

    def skip(folder, names):  # the checkout's bundled zoo/ and build outputs, not the package
        return [n for n in names if (os.path.samefile(folder, ROOT) and n in top)
                or n == "__pycache__" or n.endswith(".egg-info")]
    shutil.copytree(ROOT, src, ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("nq_plugin-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    with open(os.path.join(site.stdout.strip(), "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True)
    return wheel, venv


def run(venv, *args, env=None, cwd=None):
    return subprocess.run([str(venv / "bin" / args[0]), *map(str, args[1:])],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_wheel_holds_the_manifest(wheel_venv):
    wheel, _ = wheel_venv
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read("nq_plugin/zoo/manifest.json"))
    ours = json.loads((ROOT / "nq_plugin" / "zoo" / "manifest.json").read_text())
    assert data == ours


def test_wheel_install_lists_the_zoo_and_downloads_from_the_hub(
        tmp_path, wheel_venv, tiny_zoo, published):
    _, venv = wheel_venv
    env = {k: v for k, v in os.environ.items() if k not in ("NQ_ZOO_DIR", "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    res = run(venv, "python", "-c", "import nq_plugin, sys; print(nq_plugin.__file__)",
              env=env, cwd=tmp_path)
    assert res.stdout.startswith(str(venv)), res.stdout + res.stderr  # not the checkout
    res = run(venv, "nq-zoo", "list", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = [m["name"] for m in
             json.loads((ROOT / "nq_plugin" / "zoo" / "manifest.json").read_text())["models"]]
    for name in names:
        assert name in res.stdout
    # an unpublished model: a clear error, no traceback (a wheel bundles no model files)
    res = run(venv, "nq-zoo", "download", names[0], env=env, cwd=tmp_path)
    assert res.returncode == 2 and "not published on the Hub yet" in res.stderr
    assert "Traceback" not in res.stderr

    # a published model (the stand-in Hub), through a manifest of its own: downloaded, verified
    hub, commit = published
    root, entry, _ = tiny_zoo
    own = tmp_path / "zoo"
    own.mkdir()
    item = dict(entry, revision=commit)
    (own / "manifest.json").write_text(json.dumps({"manifest_version": 1, "models": [item]}))
    env.update(NQ_ZOO_DIR=str(own), HF_HUB_OFFLINE="0")
    res = run(venv, "nq-zoo", "download", NAME, "--endpoint", hub.endpoint, "--cache-dir",
              tmp_path / "cache", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{len(entry['files'])} files verified (sha256)" in res.stdout
    assert commit in res.stdout and "DEBUG" not in res.stdout + res.stderr
    res = run(venv, "python", "-c", "import nq_plugin.zoo as z, sys; lm = z.load(sys.argv[1], "
              "bundled=False, cache_dir=sys.argv[2], endpoint=sys.argv[3]); "
              "print(lm.score('the market')['bits_per_symbol'])", NAME, tmp_path / "cache",
              hub.endpoint, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.strip().splitlines()[-1]) > 0
