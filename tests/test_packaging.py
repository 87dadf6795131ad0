"""What the package states: torch as a range (a user's CUDA build of torch is kept), the exact
CPU wheel only in the `test` extra that the README's set-up and CI install; and nothing in the
README, the package or setup.cfg points outside the repository."""
import configparser
import re

from tests.fairseq_utils import ROOT


def requirements(cfg, section, key):
    return [line.strip() for line in cfg[section][key].splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_torch_is_a_range_and_the_test_extra_pins_the_cpu_wheel():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    (torch,) = [r for r in requirements(cfg, "options", "install_requires")
                if re.match(r"torch\b", r)]
    assert "==" not in torch and ">=" in torch and "<" in torch, torch
    assert "torch==2.13.0" in requirements(cfg, "options.extras_require", "test")
    readme = (ROOT / "README.md").read_text()
    assert '.venv/bin/pip install -e ".[test,gpu]"' in readme
    assert 'pip install -e ".[test,gpu]"' in (ROOT / ".ci" / "run").read_text()


def test_nothing_points_outside_the_repository():
    files = [ROOT / "README.md", ROOT / "setup.cfg", *sorted((ROOT / "nq_plugin").rglob("*.py")),
             *sorted((ROOT / "docs").rglob("*.md"))]
    for path in files:
        text = path.read_text()
        assert "DESIGN.md" not in text and "../shared/DESIGN" not in text, path
