"""nq_plugin: normalized, quantized LSTMs (Hou et al., NeurIPS 2019) for fairseq.

The core (``quant``, ``norm``, ``nn``, ``sizes``) is plain PyTorch. Importing this package --
which ``fairseq-train --user-dir nq_plugin`` does -- registers the fairseq components below,
explicitly, and allow-lists the types of fairseq checkpoints for torch's safe loader.
"""
from .sizes import summary

__version__ = "0.1.0"


def _import_fairseq():
    """fairseq, imported without letting its text_to_speech tasks configure the root logger
    (they call ``logging.basicConfig(level=DEBUG)`` on import, which would print every
    library's DEBUG lines in the importing program, e.g. the HTTP client's during a download).
    A root logger someone configured (fairseq's own commands do) is left as it is."""
    import logging
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)  # basicConfig does nothing while the root has a handler
    try:
        import fairseq
        import fairseq.tasks  # noqa: F401  (imports every task module)
        return fairseq
    except ImportError:  # the core works without fairseq
        return None
    finally:
        if guard is not None:
            root.removeHandler(guard)


fairseq = _import_fairseq()

if fairseq is not None:
    from .compat import patch_numpy_for_fairseq
    patch_numpy_for_fairseq()  # fairseq's stock LM data code with numpy >= 2 (compat.py)
    from . import checkpoint  # safe loading of fairseq checkpoints
    checkpoint.track_fairseq_reads()  # a refused checkpoint is named by its file
    from .distributed import support_torchrun_on_cpu
    from .criterions import sequence_classification  # noqa: F401  sequence_classification
    from .models import nq_lstm_classifier  # noqa: F401  nq_lstm_classifier(_smnist)
    from .models import nq_lstm_classifier_packed  # noqa: F401  (nq-pack output)
    from .models import nq_lstm_lm  # noqa: F401  model nq_lstm_lm and its architectures
    from .models import nq_lstm_lm_packed  # noqa: F401  nq_lstm_lm_packed (nq-pack output)
    from .optim import nq_optimizers  # noqa: F401  optimizers nq_adam, nq_sgd
    from .tasks import bptt_lm  # noqa: F401  task bptt_lm
    from .tasks import sequential_mnist  # noqa: F401  task sequential_mnist

    support_torchrun_on_cpu()  # torchrun ... fairseq-train --cpu: real data parallelism
    from .errors import install_excepthook
    install_excepthook()  # the plugin's user errors print as one line under fairseq's commands

__all__ = ["summary"]
