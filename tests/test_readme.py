"""The commands the README shows (its train -> evaluate -> pack example) and those of
docs/training.md's Penn Treebank section, run verbatim on tiny stand-in data (two updates each):
the fairseq-train / fairseq-eval-lm / nq-summary / nq-pack lines must keep working as written;
the README's main job and zoo table are what the commands print."""
import re
import shlex

import pytest

from tests.fairseq_utils import DEMO_TEXT, ROOT, console, preprocess


def section(path, heading):
    text = (ROOT / path).read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else len(text)]


def commands_of(text):
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith(("fairseq-", "nq-summary", "nq-pack")):
                commands.append(shlex.split(command))
    return commands


def readme_commands():
    """The README's example, then docs/training.md's PTB commands (each distinct one once)."""
    commands = []
    for argv in commands_of(section("README.md", "## Train, evaluate, pack")) + \
            commands_of(section("docs/training.md", "## Penn Treebank")):
        if argv not in commands:
            commands.append(argv)
    return commands


def test_readme_has_the_ptb_commands():
    shown = [c[0] for c in commands_of(section("README.md", "## Train, evaluate, pack"))]
    assert shown == ["fairseq-train", "fairseq-eval-lm", "nq-summary", "nq-pack",
                     "fairseq-eval-lm"]
    names = [c[0] for c in readme_commands()]
    assert names.count("fairseq-train") == 2 and names.count("fairseq-eval-lm") == 3


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """data-bin/ptb_char and data-bin/ptb_word, made from the demo text."""
    root = tmp_path_factory.mktemp("readme")
    words = root / "words"
    words.mkdir()
    for split in ("train", "valid"):
        lines = (DEMO_TEXT / f"{split}.txt").read_text().splitlines()
        (words / f"{split}.txt").write_text(
            "\n".join(line.replace(" ", "").replace("_", " ") for line in lines) + "\n")
    preprocess(DEMO_TEXT / "train.txt", DEMO_TEXT / "valid.txt", root / "data-bin" / "ptb_char",
               testpref=DEMO_TEXT / "valid.txt")
    preprocess(words / "train.txt", words / "valid.txt", root / "data-bin" / "ptb_word",
               testpref=words / "valid.txt")
    return root


@pytest.mark.slow
def test_readme_commands_run_as_written(stand_in):
    for argv in readme_commands():
        argv = [a.replace("data-bin/", f"{stand_in}/data-bin/")
                 .replace("checkpoints/", f"{stand_in}/checkpoints/")
                 .replace("packed/", f"{stand_in}/packed/")
                 .replace("nq_plugin", str(ROOT / "nq_plugin")) if a != "--user-dir" else a
                for a in argv]
        if argv[0] == "fairseq-train":
            argv += ["--max-update", "2"]  # the only change: stop after two updates
        out = console(*argv)
        if argv[0] == "fairseq-eval-lm":
            assert "Perplexity" in out.stdout + out.stderr
        if argv[0] == "nq-summary":
            assert "LSTM layers (the paper's size)" in out.stdout
        if argv[0] == "nq-pack":
            assert "x smaller" in out.stdout


@pytest.mark.slow
def test_readme_main_job_runs_offline_and_prints_what_the_readme_shows():
    """The first set-up command's main job (after the install, which CI runs): nq-zoo eval on
    the bundled zoo model with HF_HUB_OFFLINE=1; its metric and size lines are as pasted."""
    import os
    text = (ROOT / "README.md").read_text()
    setup = text[text.index("## Set-up: two commands"):text.index("## Model zoo")]
    line = next(l for l in setup.splitlines() if l.startswith("python3 -m venv"))
    job = shlex.split(line.split("&&")[-1])
    env_vars = dict(a.split("=", 1) for a in job if re.match(r"^[A-Z_]+=", a))
    argv = [a for a in job if not re.match(r"^[A-Z_]+=", a)]
    assert env_vars == {"HF_HUB_OFFLINE": "1"} and argv[0] == ".venv/bin/nq-zoo"
    env = dict(os.environ, **env_vars, HF_ENDPOINT="http://127.0.0.1:9")  # no Hub reachable
    env.pop("NQ_ZOO_DIR", None)
    out = console("nq-zoo", *argv[1:], env=env).stdout
    pasted = setup.split("The main job prints (measured here):")[1].split("```")[1]
    for prefix in ("model ", "bits per character:", "size "):
        got = next(l for l in out.splitlines() if l.startswith(prefix))
        assert got in pasted, f"README shows another {prefix!r} line than the command prints"
    assert re.search(r"^sample  ['\"]the company said", out, re.M)  # repr: either quote


def test_readme_zoo_table_is_the_manifests():
    """The README's zoo table is `nq-zoo list --markdown` (generated from the manifest, not
    typed): a model improved by the campaign shows its new number or this fails."""
    from nq_plugin.zoo.listing import markdown_table
    from nq_plugin.zoo.manifest import Manifest
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- zoo-table")[1].split("-->", 1)[1].split("<!-- /zoo-table -->")[0]
    assert block.strip() == markdown_table(Manifest.load()).strip()
    out = console("nq-zoo", "list", "--markdown").stdout
    assert out.strip() == block.strip()


def test_readme_is_a_five_minute_read():
    """The README holds the pitch, the two commands, the zoo, one example, the matrix and
    links (at most 150 lines); everything else lives in docs/, and every page it links exists."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: {target}"
