"""fairseq-eval-lm speed of the zoo's language models, unpacked (model.pt) and bit-packed
(packed/checkpoint.pt), side by side in one run, on a binarized data folder (default: the PTB
char test split, the zoo's own evaluation command).

    python benchmarks/zoo_eval_speed.py --data data-bin/ptb_char [--batch-size 16 1]

Prints tokens/s as fairseq-eval-lm reports them and the loss of each (packed must equal
unpacked). The full-precision model (quantizer fp) is also run with its LSTM swapped for
torch's int8 dynamic LSTM (`torch.ao.nn.quantized.dynamic.LSTM` built from the same weights,
what a user would pick for a 4x smaller LSTM): the int8 anchor row, with its own loss. Run on
an idle machine.
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEED = re.compile(r"Evaluated ([0-9,]+) tokens in ([0-9.]+)s \(([0-9.]+) tokens/s\)")
LOSS = re.compile(r"Loss \(base 2\): ([0-9.]+)")


# fairseq-eval-lm in a child process, the loaded models' LSTMs swapped for torch's int8 dynamic
# LSTM (benchmarks/inference_step.py's int8_lstm) before evaluation
INT8 = f"""
import sys
sys.path.insert(0, {os.path.join(ROOT, "benchmarks")!r})
import torch
from fairseq import checkpoint_utils
from fairseq_cli.eval_lm import cli_main
from inference_step import int8_lstm


class Int8LSTM(torch.nn.Module):
    def __init__(self, nq):
        super().__init__()
        ref = torch.nn.LSTM(nq.input_size, nq.hidden_size, nq.num_layers)
        with torch.no_grad():
            for i, layer in enumerate(nq.layers):
                w_ih, w_hh = layer.effective_weights()
                getattr(ref, f"weight_ih_l{{i}}").copy_(w_ih)
                getattr(ref, f"weight_hh_l{{i}}").copy_(w_hh)
                getattr(ref, f"bias_ih_l{{i}}").copy_(layer.bias)
                getattr(ref, f"bias_hh_l{{i}}").zero_()
        self.lstm = int8_lstm(ref.eval())
        assert self.lstm is not None, "this torch has no int8 dynamic LSTM"

    def forward(self, x, state=None, t0=0, observer=None):
        return self.lstm(x, state)


load = checkpoint_utils.load_model_ensemble_and_task


def load_int8(*args, **kwargs):
    models, cfg, task = load(*args, **kwargs)
    for model in models:
        model.eval()
        model.decoder.lstm = Int8LSTM(model.decoder.lstm)
    print("INT8_LSTM", type(models[0].decoder.lstm.lstm).__name__, flush=True)
    return models, cfg, task


checkpoint_utils.load_model_ensemble_and_task = load_int8
sys.argv = ["fairseq-eval-lm"] + sys.argv[1:]
cli_main()
"""


def run(data, path, batch, tokens, int8=False):
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-eval-lm")
    command = [sys.executable, "-c", INT8] if int8 else [exe]
    out = subprocess.run(command + [data, "--user-dir", os.path.join(ROOT, "nq_plugin"), "--task",
                                    "bptt_lm", "--path", path, "--gen-subset", "test", "--cpu",
                                    "--tokens-per-sample", str(tokens), "--batch-size",
                                    str(batch)],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    speed, loss = SPEED.search(text), LOSS.search(text)
    if out.returncode or not speed or not loss or (int8 and "INT8_LSTM" not in text):
        raise SystemExit(f"fairseq-eval-lm failed on {path}:\n{text[-2000:]}")
    return float(speed.group(3)), float(loss.group(1))


def packed_checkpoint(name, folder):
    """The packed copy's checkpoint: bundled, or rebuilt from model.pt and verified against the
    manifest (the zoo's first use, nq_plugin/zoo/derive.py); None for a model without one."""
    from nq_plugin.zoo.derive import packed_folder
    from nq_plugin.zoo.manifest import Manifest, ZooError
    try:
        return os.path.join(packed_folder(Manifest.load().get(name), folder), "checkpoint.pt")
    except ZooError:  # no packed copy (the fp model)
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "data-bin", "ptb_char"))
    p.add_argument("--dataset", default="ptb_char")
    p.add_argument("--batch-size", type=int, nargs="+", default=[16])
    a = p.parse_args()
    manifest = json.load(open(os.path.join(ROOT, "nq_plugin", "zoo", "manifest.json")))
    print("| model | batch | unpacked tokens/s | packed tokens/s | packed / unpacked | BPC (both) |")
    print("|---|---|---|---|---|---|")
    for m in manifest["models"]:
        if m["dataset"] != a.dataset or m["task"] != "bptt_lm":
            continue
        folder = os.path.join(ROOT, "zoo", m["bundled"])
        packed = packed_checkpoint(m["name"], folder)
        for batch in a.batch_size:
            u, lu = run(a.data, os.path.join(folder, m["checkpoint"]), batch, 100)
            if packed is not None:
                q, lq = run(a.data, packed, batch, 100)
                assert abs(lq - lu) < 1e-3, (m["name"], lu, lq)
                print(f"| {m['name']} | {batch} | {u:,.0f} | {q:,.0f} | {q / u:.2f}x | {lu:.4f} |")
            else:
                print(f"| {m['name']} | {batch} | {u:,.0f} | — | — | {lu:.4f} |")
            if m["quantizer"] == "fp":  # the anchors: fp32 (the row above) and its int8 LSTM
                i8, li8 = run(a.data, os.path.join(folder, m["checkpoint"]), batch, 100, int8=True)
                print(f"| {m['name']}, LSTM int8 dynamic (anchor) | {batch} | {i8:,.0f} | — | — | "
                      f"{li8:.4f} |")


if __name__ == "__main__":
    main()
