"""What the optional int8 activations cost in accuracy: the zoo's packed language models scored
token by token on the test split of a binarized data folder -- 8 streams, one step per call,
state carried (bptt_lm's own segments with --tokens-per-sample 1, so every step goes through the
fused native CPU step) -- with exact fp32 activations and with ``NQ_PLUGIN_ACTIVATIONS=int8``
(h quantized to int8 for the recurrent product).

    python benchmarks/int8_activations.py --data data-bin/ptb_char [--models NAME ...]

The loop is fairseq-eval-lm's without its per-batch machinery (10,000 one-token batches take it
minutes): the mean negative log2-likelihood of each target. As a check, the same loop in fp32
over the card's own segments (--tokens-per-sample / --batch-size of the model's evaluation)
must reproduce the model card's test metric; it is printed beside. Speed: inference_step.py and
eval_paths.py.
"""
import argparse
import math
import os

import torch
import torch.nn.functional as F

from nq_plugin import backend
from nq_plugin.files import sha256_file
from nq_plugin.tasks.bptt_lm import BPTTSegments
from nq_plugin.zoo.derive import packed_folder
from nq_plugin.zoo.fetch import download
from nq_plugin.zoo.manifest import Manifest


def score(model, task, columns, steps, mode):
    """Mean negative log2-likelihood over the test split's segments of ``columns`` x ``steps``."""
    segments = BPTTSegments(task.dataset("test"), columns, steps)
    nll, count = 0.0, 0
    with torch.no_grad(), backend.use(activations=mode):
        for k in range(len(segments)):
            batch = segments.collater([segments[k]])
            logits, _ = model(**batch["net_input"])
            logp = F.log_softmax(logits.float(), dim=-1)
            nll -= logp.gather(-1, batch["target"].unsqueeze(-1)).sum().item()
            count += batch["target"].numel()
    return nll / count / math.log(2)


def option(args, name, default):
    return int(args[args.index(name) + 1]) if name in args else default


def main():
    from fairseq import checkpoint_utils
    import nq_plugin  # noqa: F401  registers the models and the task
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="binarized data folder (its test split)")
    p.add_argument("--models", nargs="*", help="zoo names (default: the packed models whose "
                   "dictionary is the data folder's)")
    a = p.parse_args()
    torch.set_num_threads(1)  # the results do not depend on it; one thread avoids waiting
    # at barriers for a core another job holds (this measures accuracy, not speed)
    dict_sha = sha256_file(os.path.join(a.data, "dict.txt"))
    entries = [e for e in Manifest.load().models.values()
               if e.task == "bptt_lm" and any(f.path.startswith("packed/") for f in e.files)
               and e.dictionary_sha256 == dict_sha and (not a.models or e.name in a.models)]
    print("| model | card (fairseq-eval-lm) | this loop, card's segments, fp32 | token by token, "
          "fp32 | token by token, int8 h | int8 - fp32 |")
    print("|---|---|---|---|---|---|")
    for e in sorted(entries, key=lambda e: e.name):
        ckpt = os.path.join(packed_folder(e, download(e)), "checkpoint.pt")
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [ckpt], arg_overrides={"data": a.data})
        model = models[0].eval()
        task.load_dataset("test")
        card = score(model, task, option(e.metric.eval_args, "--batch-size", 1),
                     option(e.metric.eval_args, "--tokens-per-sample", 100), "fp32")
        exact, fast = (score(model, task, 8, 1, mode) for mode in ("fp32", "int8"))
        unit = (lambda v: v) if e.metric.name == "bpc" else (lambda v: 2 ** v)  # PPL
        print(f"| {e.name} | {e.metric.value:.4f} {e.metric.name} | {unit(card):.5f} | "
              f"{unit(exact):.5f} | {unit(fast):.5f} | {unit(fast) - unit(exact):+.5f} |",
              flush=True)


if __name__ == "__main__":
    main()
