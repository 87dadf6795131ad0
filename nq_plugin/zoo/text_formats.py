"""How a zoo model's symbols map to and from plain text.

``ptb_char``: one symbol per character, a space written as ``_`` (Penn Treebank character files:
``t h e _ c a t``), the end of a line is fairseq's end-of-sentence symbol. ``words``:
whitespace-separated tokens, unknown words as ``<unk>`` (Penn Treebank word level)."""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple


def _ptb_char_encode(text: str) -> List[str]:
    return ["_" if ch == " " else ch for ch in text.strip("\n")]


def _ptb_char_decode(symbols: List[str]) -> str:
    return "".join("\n" if s == "</s>" else " " if s == "_" else s for s in symbols)


def _words_encode(text: str) -> List[str]:
    return text.split()


def _words_decode(symbols: List[str]) -> str:
    return " ".join("\n" if s == "</s>" else s for s in symbols).replace(" \n ", "\n")


TEXT_FORMATS: Dict[str, Tuple[Callable[[str], List[str]], Callable[[List[str]], str]]] = {
    "ptb_char": (_ptb_char_encode, _ptb_char_decode),
    "words": (_words_encode, _words_decode),
}


def _sentencepiece(fmt: str):
    """``spm:PATH``: pieces of the sentencepiece model at PATH (the custom_text recipe)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=fmt[len("spm:"):])
    return (lambda text: sp.encode(text, out_type=str),
            lambda symbols: "\n".join(sp.decode_pieces([s for s in line.split(" ") if s])
                                      for line in " ".join(symbols).split("</s>")))


def encode(fmt: str, text: str) -> List[str]:
    if fmt.startswith("spm:"):
        return _sentencepiece(fmt)[0](text)
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; known: {sorted(TEXT_FORMATS)}")
    return TEXT_FORMATS[fmt][0](text)


def decode(fmt: str, symbols: List[str]) -> str:
    if fmt.startswith("spm:"):
        return _sentencepiece(fmt)[1](symbols)
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; known: {sorted(TEXT_FORMATS)}")
    return TEXT_FORMATS[fmt][1](symbols)
