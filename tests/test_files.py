"""nq_plugin/files.py: what is renamed into place is whole, and has the mode a plain write
would give it (not tempfile's private 0600 / 0700)."""
import os
import stat

import pytest

from nq_plugin.files import atomic_folder, atomic_path, atomic_write_text, temporary_folder


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_have_the_usual_mode(tmp_path, umask_022):
    atomic_write_text(str(tmp_path / "a.txt"), "x")
    assert _mode(tmp_path / "a.txt") == 0o644
    with atomic_folder(str(tmp_path / "out")) as tmp:
        atomic_write_text(os.path.join(tmp, "b.txt"), "y")
    assert _mode(tmp_path / "out") == 0o755 and _mode(tmp_path / "out" / "b.txt") == 0o644
    assert _mode(temporary_folder(str(tmp_path), ".t.")) == 0o755
    os.umask(0o077)
    atomic_write_text(str(tmp_path / "c.txt"), "z")
    assert _mode(tmp_path / "c.txt") == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
