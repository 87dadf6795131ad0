"""Console commands (nq-summary, nq-pack, nq-analyze, nq-zoo): argument parsing and printing on
top of the library."""
from __future__ import annotations

import logging

QUIET_LIBRARIES = ("fairseq", "nq_plugin", "httpcore2", "httpx2", "httpcore", "httpx",
                   "urllib3", "filelock", "huggingface_hub", "hydra", "matplotlib")


def add_verbosity(parser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log lines: -v info, -vv debug (default: warnings only)")


def configure_logging(verbosity: int = 0) -> None:
    """Warnings only by default, from every library; ``-v`` adds info lines, ``-vv`` debug.

    fairseq's text_to_speech modules call ``logging.basicConfig(level=DEBUG)`` when imported,
    which would print the HTTP client's DEBUG lines during a download; configured here first,
    the root logger has a handler, so their ``basicConfig`` does nothing."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(level)
