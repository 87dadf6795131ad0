"""Byte-level character corpora (War and Peace, text8) binarized for fairseq without losing or
adding a symbol.

``fairseq-preprocess`` splits lines on whitespace and appends an end-of-line symbol to each line,
so spaces, CR and a missing final newline would be lost or invented. Here every byte is one
symbol: printable ASCII (33-126) as itself, every other byte as ``<0xNN>`` (the space is
``<0x20>``, LF ``<0x0A>``, CR ``<0x0D>``, the UTF-8 byte-order mark ``<0xEF> <0xBB> <0xBF>``).
The splits are cut by byte position in file order and written with fairseq's own indexed
dataset builder in chunks (items without an end-of-line symbol), so ``bptt_lm`` sees exactly the
file's bytes and a 100M-byte single line is streamed, never held as Python strings. The
dictionary lists every byte value of the file (counts from the training split), so the model's
one-hot input has exactly as many columns as the file has distinct bytes, plus fairseq's 4
special symbols.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from typing import Dict, IO, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ..errors import UserError
from ..files import atomic_folder

CHUNK = 1 << 20


def byte_symbol(b: int) -> str:
    return chr(b) if 33 <= b <= 126 else f"<0x{b:02X}>"


def symbol_byte(s: str) -> int:
    return int(s[3:5], 16) if s.startswith("<0x") and len(s) == 6 else ord(s)


class CorpusError(ValueError, UserError):
    """A corpus file that is not what the recipe expects; the message says what to do."""


def _chunks(f: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    f.seek(start) if start else None
    left = end - start
    while left > 0:
        block = f.read(min(CHUNK, left))
        if not block:
            raise CorpusError("the file ended early while reading it (truncated?)")
        left -= len(block)
        yield block


def _open(path: str, member: Optional[str]):
    if member is None:
        return open(path, "rb"), os.path.getsize(path)
    z = zipfile.ZipFile(path)
    info = z.getinfo(member)
    return z.open(member), info.file_size


def byte_counts(path: str, member: Optional[str] = None) -> Tuple[np.ndarray, str, int]:
    """Counts of every byte value, the SHA-256 of the content and its length (one pass)."""
    counts = np.zeros(256, dtype=np.int64)
    h = hashlib.sha256()
    f, size = _open(path, member)
    with f:
        for block in _chunks(f, 0, size):
            counts += np.bincount(np.frombuffer(block, dtype=np.uint8), minlength=256)
            h.update(block)
    return counts, h.hexdigest(), size


def split_bounds(size: int, fractions: Sequence[float] = (), sizes: Sequence[int] = ()
                 ) -> List[Tuple[str, int, int]]:
    """(split, start, end) byte ranges in file order: by fractions (80/10/10) or sizes."""
    names = ("train", "valid", "test")
    if sizes:
        if sum(sizes) != size:
            raise CorpusError(f"split sizes {list(sizes)} add up to {sum(sizes)}, the file has "
                              f"{size} bytes")
        lengths = list(sizes)
    else:
        first = int(size * fractions[0])
        second = int(size * (fractions[0] + fractions[1]))
        lengths = [first, second - first, size - second]
    out, start = [], 0
    for name, n in zip(names, lengths):
        out.append((name, start, start + n))
        start += n
    return out


def byte_table(d) -> np.ndarray:
    """Byte value -> dictionary id (``<unk>`` for a byte the dictionary lacks)."""
    return np.array([d.index(byte_symbol(b)) for b in range(256)], dtype=np.int64)


def write_items(items: Iterator[np.ndarray], vocab_size: int, prefix: str) -> None:
    """Write arrays of symbol ids as the items of fairseq's mmap indexed dataset ``prefix``
    (.bin/.idx), adding nothing (fairseq-preprocess would append end-of-sentence to each)."""
    from fairseq.data import indexed_dataset
    builder = indexed_dataset.make_builder(indexed_dataset.data_file_path(prefix), "mmap",
                                           vocab_size=vocab_size)
    for ids in items:
        builder.add_item(torch.from_numpy(np.asarray(ids, dtype=np.int64)))
    builder.finalize(indexed_dataset.index_file_path(prefix))


def _split_items(path, member, start, end, table) -> Iterator[np.ndarray]:
    f, _ = _open(path, member)
    with f:
        if member is not None and start:  # zip members cannot seek cheaply: skip forward
            for _ in _chunks(f, 0, start):
                pass
            start_in = 0
        else:
            start_in = start
        for block in _chunks(f, start_in, start_in + (end - start)):
            yield table[np.frombuffer(block, dtype=np.uint8)]


def _write_splits(path, member, bounds, d, table, out_dir, split_sizes) -> None:
    for name, start, end in bounds:
        write_items(_split_items(path, member, start, end, table), len(d),
                    os.path.join(out_dir, name))
        split_sizes[name] = end - start


def binarize_with_dictionary(path: str, dict_path: str, out_dir: str, split: str = "test"
                             ) -> int:
    """Binarize a whole file byte by byte with an existing byte dictionary (a zoo model's
    dict.txt) as the ``split`` of a new data folder ``out_dir`` (its dict.txt copied beside);
    a byte the dictionary lacks becomes ``<unk>``. Returns the number of symbols."""
    from fairseq.data import Dictionary

    d = Dictionary.load(dict_path)
    table = byte_table(d)
    size = os.path.getsize(path)
    with atomic_folder(out_dir) as tmp:
        write_items(_split_items(path, None, 0, size, table), len(d), os.path.join(tmp, split))
        shutil.copyfile(dict_path, os.path.join(tmp, "dict.txt"))
    return size


def prepare(path: str, out_dir: str, fractions: Sequence[float] = (0.8, 0.1, 0.1),
            sizes: Sequence[int] = (), member: Optional[str] = None,
            expected_sha256: Optional[str] = None, expected_size: Optional[int] = None,
            alphabet: Optional[bytes] = None) -> Dict[str, object]:
    """Binarize a byte corpus into ``out_dir`` (dict.txt, {train,valid,test}.{bin,idx});
    returns the symbol inventory and split sizes."""
    from fairseq.data import Dictionary, indexed_dataset

    if not os.path.isfile(path):
        raise CorpusError(f"{path} not found")
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise CorpusError(f"{out_dir} exists and is not empty; choose another folder")
    counts, digest, size = byte_counts(path, member)
    if expected_size is not None and size != expected_size:
        raise CorpusError(f"{path}: {size} bytes, expected {expected_size}: not the original file")
    if expected_sha256 is not None and digest != expected_sha256:
        raise CorpusError(f"{path}: sha256 {digest} differs from the expected {expected_sha256}: "
                          "not the original file (or a different release)")
    if alphabet is not None:
        stray = sorted(set(np.nonzero(counts)[0]) - set(alphabet))
        if stray:
            raise CorpusError(f"{path} holds bytes outside the expected alphabet: "
                              f"{[byte_symbol(b) for b in stray[:10]]}")
    bounds = split_bounds(size, fractions, sizes)
    train_counts = np.zeros(256, dtype=np.int64)
    f, _ = _open(path, member)
    with f:
        for block in _chunks(f, bounds[0][1], bounds[0][2]):
            train_counts += np.bincount(np.frombuffer(block, dtype=np.uint8), minlength=256)
    present = [b for b in range(256) if counts[b] > 0]
    present.sort(key=lambda b: (-train_counts[b], b))
    d = Dictionary()
    for b in present:
        d.add_symbol(byte_symbol(b), n=int(train_counts[b]))
    table = byte_table(d)
    split_sizes = {}
    with atomic_folder(out_dir) as tmp:  # an interrupted run leaves no half-written corpus
        _write_splits(path, member, bounds, d, table, tmp, split_sizes)
        d.save(os.path.join(tmp, "dict.txt"))
    return {"symbols": len(present), "bytes": size, "sha256": digest, "splits": split_sizes,
            "dictionary": len(d)}


# The corpora of the paper's appendix A.1. War and Peace as distributed with char-rnn (Karpathy);
# text8 from Matt Mahoney's site, whose size TensorFlow's word2vec tutorial pins (31,344,016
# bytes; no library we found pins a hash of it), checked further by content: 100,000,000 bytes
# of a-z and space.
PRESETS = {
    "warpeace": {"url": "https://cs.stanford.edu/people/karpathy/char-rnn/warpeace_input.txt",
                 "file": "warpeace_input.txt", "member": None,
                 "sha256": "fb66ba999dafe24017cdd59e04c56d385a9c8466993d374fd4c6f08b2142985e",
                 "size": 3258246, "fractions": (0.8, 0.1, 0.1), "sizes": (), "alphabet": None,
                 "download_size": None},
    "text8": {"url": "http://mattmahoney.net/dc/text8.zip", "file": "text8.zip",
              "member": "text8", "sha256": None, "size": 100_000_000, "fractions": (),
              "sizes": (90_000_000, 5_000_000, 5_000_000),
              "alphabet": b"abcdefghijklmnopqrstuvwxyz ", "download_size": 31344016},
}


def main(argv=None) -> int:
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m nq_plugin.data.symbol_corpus",
                                description="binarize War and Peace / text8 byte by byte")
    p.add_argument("corpus", choices=sorted(PRESETS))
    p.add_argument("file", help="the downloaded file (warpeace_input.txt or text8.zip)")
    p.add_argument("out", help="new folder for dict.txt and the binarized splits")
    p.add_argument("--sha256", help="expected sha256 of the content (default: the preset's)")
    p.add_argument("--size", type=int, help="expected content size (default: the preset's)")
    p.add_argument("--download-size", type=int, help="expected size of the downloaded file")
    p.add_argument("--split-sizes", type=int, nargs=3, help="train valid test sizes in bytes "
                   "(default: the preset's; War and Peace: 80/10/10 %%)")
    a = p.parse_args(argv)
    pre = PRESETS[a.corpus]
    try:
        want = a.download_size if a.download_size is not None else pre["download_size"]
        if want is not None and os.path.getsize(a.file) != want:
            raise CorpusError(f"{a.file}: {os.path.getsize(a.file)} bytes, the original "
                              f"{pre['file']} has {want}: download it again")
        info = prepare(a.file, a.out, fractions=pre["fractions"],
                       sizes=a.split_sizes or pre["sizes"], member=pre["member"],
                       expected_sha256=a.sha256 or pre["sha256"],
                       expected_size=a.size if a.size is not None else pre["size"],
                       alphabet=pre["alphabet"])
    except (CorpusError, OSError, zipfile.BadZipFile, KeyError) as err:
        print(f"prepare {a.corpus}: {err}", file=sys.stderr)
        return 2
    print(f"{a.corpus}: {info['bytes']:,} bytes, {info['symbols']} symbols, splits "
          + ", ".join(f"{k} {v:,}" for k, v in info["splits"].items()) + f" -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
