"""nq_plugin/native.py: where the extension is built (no compiler run here)."""
import os

from nq_plugin import native


def test_each_checkout_builds_in_a_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    clone, worktree = tmp_path / "clone" / "csrc", tmp_path / "worktree" / "csrc"
    clone.mkdir(parents=True)
    worktree.mkdir(parents=True)
    a = native.build_directory(native.NAME, str(clone))
    b = native.build_directory(native.NAME, str(worktree))
    assert a != b  # one shared folder is rebuilt by each checkout in turn
    assert a == native.build_directory(native.NAME, str(clone))  # stable: built once
    for path in (a, b):
        assert os.path.isdir(path)
        assert os.path.dirname(path) == str(tmp_path / "ext")
        assert os.path.basename(path).startswith(native.NAME + "-")
    # the AVX2-only module is another name, so another folder
    assert native.build_directory(native._name("x86-64-v3"), str(clone)) != a


def test_the_folder_follows_a_link_to_the_same_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    (tmp_path / "src" / "csrc").mkdir(parents=True)
    os.symlink(tmp_path / "src", tmp_path / "link")
    assert (native.build_directory(native.NAME, str(tmp_path / "src" / "csrc"))
            == native.build_directory(native.NAME, str(tmp_path / "link" / "csrc")))
