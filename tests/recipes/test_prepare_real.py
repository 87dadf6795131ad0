"""The recipes' preparation of the datasets this project has (../shared/data): Penn Treebank
(word and char) and MNIST, from a local copy, checksums verified; a tampered copy is refused."""
import shutil

import pytest

from tests.fairseq_utils import SHARED_DATA
from tests.recipes.test_corpora import RECIPES, run

PTB = SHARED_DATA / "ptb"
MNIST = SHARED_DATA / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not PTB.is_dir(), reason="../shared/data/ptb is not present")
def test_ptb_preparation_verifies_and_binarizes(tmp_path):
    res = run(RECIPES / "ptb_char" / "prepare.sh", tmp_path / "bin", PTB)
    assert "ptb_char (49 symbols)" in res.stdout and "ptb_word (10004 words)" in res.stdout
    for d in ("ptb_char", "ptb_word"):
        assert all((tmp_path / "bin" / d / f"{s}.bin").stat().st_size > 0
                   for s in ("train", "valid", "test"))
    assert not list((tmp_path / "bin").glob(".*part*"))  # the temporary folders were renamed


@pytest.mark.skipif(not PTB.is_dir(), reason="../shared/data/ptb is not present")
def test_ptb_preparation_refuses_a_tampered_copy(tmp_path):
    copy = tmp_path / "ptb"
    shutil.copytree(PTB, copy)
    (copy / "ptb.test.txt").chmod(0o644)
    data = bytearray((copy / "ptb.test.txt").read_bytes())
    data[100] ^= 0x01
    (copy / "ptb.test.txt").write_bytes(bytes(data))
    res = run(RECIPES / "ptb_word" / "prepare.sh", tmp_path / "bin", copy, check=False)
    assert res.returncode != 0 and "checksum mismatch" in res.stderr
    assert not (tmp_path / "bin" / "ptb_word").exists()


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is not present")
def test_mnist_preparation_verifies(tmp_path):
    res = run(RECIPES / "smnist" / "prepare.sh", tmp_path / "mnist", MNIST)
    assert "MNIST verified: train 50000, valid 10000, test 10000" in res.stdout
