"""One fairseq quirk, contained: fairseq's stock ``language_modeling`` data code uses
``np.compat.long`` (``token_block_dataset.py``, ``language_pair_dataset.py``), which numpy 2
removed, so ``--sample-break-mode eos`` and sampling through fairseq crash with an
AttributeError. numpy 1's ``np.compat.long`` was Python's ``int``; this restores exactly that
name when it is missing (nothing else of numpy is touched). Applied when the plugin is imported
with fairseq (``--user-dir nq_plugin``)."""
import types

import numpy as np


def patch_numpy_for_fairseq() -> bool:
    """Give numpy >= 2 the ``np.compat.long`` alias fairseq needs; True if it was added."""
    if hasattr(np, "compat"):
        return False
    np.compat = types.SimpleNamespace(long=int)
    return True
