"""Text formats: how a zoo model's symbols map to text, and the bundled evaluation text
binarized as the model saw its data (line formats through fairseq-preprocess, the byte stream
of War and Peace byte by byte)."""
from types import SimpleNamespace

import pytest
import torch

from nq_plugin.zoo.text_formats import TEXT_FORMATS, decode, encode, symbol_ids, text_format

TEXT = "\"Well, Prince,\" said Anna Pávlovna Schérer\r\n\tin French: «Je vous avertis»\n\nEnd."


def _byte_dictionary(text: bytes):
    from fairseq.data import Dictionary
    from nq_plugin.data.symbol_corpus import byte_symbol
    d = Dictionary()
    for b in sorted(set(text)):
        d.add_symbol(byte_symbol(b))
    return d


def test_bytes_round_trip_keeps_every_byte():
    symbols = encode("bytes", TEXT)
    assert len(symbols) == len(TEXT.encode("utf-8"))
    assert "<0x20>" in symbols and "<0x0D>" in symbols and "<0x0A>" in symbols
    assert "_" not in symbols or "_" in TEXT  # no ptb-style space marker
    assert decode("bytes", symbols) == TEXT
    # a special symbol or a cut UTF-8 sequence decodes to U+FFFD, never raises
    assert decode("bytes", ["a", "<unk>", "b"]) == "a\ufffdb"
    assert decode("bytes", encode("bytes", "é")[:1]) == "\ufffd"


def test_symbol_ids_line_formats_end_lines_stream_formats_do_not():
    d = _byte_dictionary(TEXT.encode("utf-8"))
    ids = symbol_ids("bytes", d, TEXT)
    assert d.eos() not in ids and d.unk() not in ids
    assert len(ids) == len(TEXT.encode("utf-8"))
    from fairseq.data import Dictionary
    c = Dictionary()
    for s in "abc_":
        c.add_symbol(s)
    ids = symbol_ids("ptb_char", c, "ab c\n\nca\n")
    assert ids == [c.index("a"), c.index("b"), c.index("_"), c.index("c"), c.eos(),
                   c.index("c"), c.index("a"), c.eos()]  # blank lines skipped, as preprocess


def test_banned_symbols_follow_the_format():
    d = _byte_dictionary(b"ab")
    assert set(TEXT_FORMATS["bytes"].banned(d)) == {d.pad(), d.bos(), d.unk(), d.eos()}
    assert set(TEXT_FORMATS["ptb_char"].banned(d)) == {d.pad(), d.bos(), d.unk()}
    assert set(TEXT_FORMATS["words"].banned(d)) == {d.pad(), d.bos()}  # <unk> is a PTB word
    with pytest.raises(ValueError, match="unknown text format 'nope'"):
        text_format("nope")


def test_bytes_eval_text_binarized_byte_by_byte(tmp_path):
    """A War and Peace model's bundled evaluation text: every byte one item symbol, no
    end-of-sentence added, a byte outside the model's alphabet as <unk>, dict.txt unchanged;
    the same ids the Python interface scores."""
    from fairseq.data import Dictionary, data_utils
    from nq_plugin.zoo.evaluate import binarize_eval_text

    folder = tmp_path / "model"
    (folder / "eval").mkdir(parents=True)
    known = TEXT.replace("«", "").replace("»", "")  # the model has never seen the guillemets
    _byte_dictionary(known.encode("utf-8")).save(str(folder / "dict.txt"))
    (folder / "eval" / "eval.txt").write_bytes(TEXT.encode("utf-8"))
    entry = SimpleNamespace(eval_text="eval/eval.txt", text_format="bytes")
    out = binarize_eval_text(entry, str(folder), str(tmp_path / "work"))
    d = Dictionary.load(out + "/dict.txt")
    assert (tmp_path / "work" / "bin" / "dict.txt").read_bytes() == \
        (folder / "dict.txt").read_bytes()
    ds = data_utils.load_indexed_dataset(out + "/test", d)
    ids = torch.cat([ds[i] for i in range(len(ds))]).tolist()
    assert len(ids) == len(TEXT.encode("utf-8"))
    assert d.eos() not in ids
    assert ids.count(d.unk()) == len("«»".encode("utf-8"))
    assert ids == symbol_ids("bytes", d, TEXT)  # what ZooLM.score sees
