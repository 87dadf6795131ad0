"""How a zoo model's symbols map to and from plain text.

``ptb_char``: one symbol per character, a space written as ``_`` (Penn Treebank character files:
``t h e _ c a t``), the end of a line is fairseq's end-of-sentence symbol. ``words``:
whitespace-separated tokens, unknown words as ``<unk>`` (Penn Treebank word level), line ends
as for ``ptb_char``. ``bytes``: every UTF-8 byte one symbol, printable ASCII as itself and every
other byte as ``<0xNN>`` (War and Peace, text8: nq_plugin/data/symbol_corpus.py); the text is
one stream, a line end is the byte ``<0x0A>`` like any other and there is no end-of-sentence
symbol.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from ..data.symbol_corpus import byte_symbol, symbol_byte


@dataclass(frozen=True)
class TextFormat:
    """A text format: ``encode`` (one line, or the whole text of a stream format, to symbols),
    ``decode`` (symbols, ``</s>`` for a line end of a line format, to text) and ``lines``: the
    model saw fairseq-preprocess's data, one end-of-sentence symbol after every line (False: one
    stream of symbols, written without it); ``samples_unknown``: ``<unk>`` is a symbol of the
    data that sampling may draw (a word level), not an out-of-alphabet marker."""
    encode: Callable[[str], List[str]]
    decode: Callable[[List[str]], str]
    lines: bool = True
    samples_unknown: bool = False

    def banned(self, dictionary) -> List[int]:
        """The ids sampling never draws: padding, beginning of sentence, ``<unk>`` unless the
        data holds it, end of sentence for a stream format (its data has none)."""
        return ([dictionary.pad(), dictionary.bos()]
                + ([] if self.samples_unknown else [dictionary.unk()])
                + ([] if self.lines else [dictionary.eos()]))


def _ptb_char_encode(text: str) -> List[str]:
    return ["_" if ch == " " else ch for ch in text.strip("\n")]


def _ptb_char_decode(symbols: List[str]) -> str:
    return "".join("\n" if s == "</s>" else " " if s == "_" else s for s in symbols)


def _words_encode(text: str) -> List[str]:
    return text.split()


def _words_decode(symbols: List[str]) -> str:
    return " ".join("\n" if s == "</s>" else s for s in symbols).replace(" \n ", "\n")


def _bytes_encode(text: str) -> List[str]:
    return [byte_symbol(b) for b in text.encode("utf-8")]


def _bytes_decode(symbols: List[str]) -> str:
    """Bytes back to text; a special symbol (``<unk>``, ``</s>``) decodes to U+FFFD, as does a
    byte sequence that is not UTF-8."""
    out = bytearray()
    for s in symbols:
        if len(s) == 1 or (s.startswith("<0x") and len(s) == 6):
            out.append(symbol_byte(s))
        else:
            out += "\ufffd".encode("utf-8")
    return out.decode("utf-8", errors="replace")


TEXT_FORMATS: Dict[str, TextFormat] = {
    "ptb_char": TextFormat(_ptb_char_encode, _ptb_char_decode),
    "words": TextFormat(_words_encode, _words_decode, samples_unknown=True),
    "bytes": TextFormat(_bytes_encode, _bytes_decode, lines=False),
}


def _sentencepiece(fmt: str) -> TextFormat:
    """``spm:PATH``: pieces of the sentencepiece model at PATH (the custom_text recipe)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=fmt[len("spm:"):])
    return TextFormat(lambda text: sp.encode(text, out_type=str),
                      lambda symbols: "\n".join(sp.decode_pieces([s for s in line.split(" ") if s])
                                                for line in " ".join(symbols).split("</s>")))


def text_format(fmt: str) -> TextFormat:
    """The format named ``fmt`` (a key of TEXT_FORMATS, or ``spm:PATH``)."""
    if fmt.startswith("spm:"):
        return _sentencepiece(fmt)
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; known: {sorted(TEXT_FORMATS)}")
    return TEXT_FORMATS[fmt]


def encode(fmt: str, text: str) -> List[str]:
    return text_format(fmt).encode(text)


def decode(fmt: str, symbols: List[str]) -> str:
    return text_format(fmt).decode(symbols)


def symbol_ids(fmt: str, dictionary, text: str) -> List[int]:
    """The dictionary ids of ``text`` as the model saw such text in training: a line format's
    non-blank lines each followed by end-of-sentence (as fairseq-preprocess writes them), a
    stream format's symbols as they are."""
    f = text_format(fmt)
    if not f.lines:
        return [dictionary.index(s) for s in f.encode(text)]
    ids: List[int] = []
    for line in text.split("\n"):
        if line.strip():
            ids += [dictionary.index(s) for s in f.encode(line)]
            ids.append(dictionary.eos())
    return ids
