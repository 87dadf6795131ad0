"""The campaign tests' dataset: the demo text, binarized, with a plain-text copy for the card."""
import os

from tests.fairseq_utils import DEMO_TEXT


def demo_dataset(tmp, demo_char_data) -> dict:
    """A campaign ``Dataset`` (as a plan's JSON holds it) over ``demo_char_data``."""
    plain = tmp / "eval_plain.txt"
    plain.write_text("".join(line.replace(" ", "").replace("_", " ").strip() + "\n"
                             for line in (DEMO_TEXT / "valid.txt").read_text().splitlines()))
    return {"recipe": "recipes/ptb_char/train.sh", "folder": os.path.basename(demo_char_data),
            "metric": "bpc", "eval_args": ["--task", "bptt_lm", "--gen-subset", "test",
                                           "--tokens-per-sample", "16", "--cpu"],
            "text_format": "ptb_char", "eval_text": str(plain)}
