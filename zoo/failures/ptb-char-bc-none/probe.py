#!/usr/bin/env python3
"""Where BinaryConnect without normalization fails, update by update, outside fairseq.

    python zoo/failures/ptb-char-bc-none/probe.py DATA_BIN/ptb_char --mode sum|mean|mean64 \\
        --updates N [--embed 512]

A 1x512 BinaryConnect LSTM without normalization (``NQLSTM(..., quantizer="bc", norm="none")``,
one-hot input, a linear softmax layer), the paper's Adam (lr 0.002), gradient-norm clipping at
5, B=64, T=100, state carried between windows, on the Penn Treebank character training stream.
``--mode``:

- ``sum``: the loss summed over the window's 6400 tokens is backpropagated and the gradients are
  divided by 6400 afterwards (what fairseq's trainer does);
- ``mean``: the token mean is backpropagated (the authors' code: PyTorch's default reduction),
  clipped with today's ``torch.nn.utils.clip_grad_norm_`` (the total norm in float32);
- ``mean64``: as ``mean``, with the total norm summed in float64, as ``clip_grad_norm_`` of
  PyTorch <= 1.4 did (each parameter's norm taken to a Python float).

``--embed N``: a learned N-wide embedding (uniform in +-0.1, as the authors' ``init_weights``)
feeds the LSTM instead of the one-hot input, as the authors' character runs do
(``--emsize 512``).

Each update prints the window's bits per character, the total gradient norm and whether every
gradient entry is finite; ``mean64`` also prints each parameter's gradient norm.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))

from nq_plugin.nn import NQLSTM  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="the ptb_char folder of recipes/ptb/prepare.sh")
    p.add_argument("--mode", choices=("sum", "mean", "mean64"), required=True)
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--embed", type=int, default=0, help="a learned embedding this wide (0: "
                   "one-hot input)")
    args = p.parse_args()
    from fairseq.data import Dictionary, data_utils
    torch.manual_seed(1)
    d = Dictionary.load(os.path.join(args.data, "dict.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(args.data, "train"), d)
    stream = torch.cat([ds[i] for i in range(len(ds))])
    B, T, H, V = 64, 100, 512, len(d)
    n = stream.numel() // B
    cols = stream[: n * B].view(B, n).t()  # (steps, B): B contiguous columns, as bptt_lm
    embed = torch.nn.Embedding(V, args.embed) if args.embed else None
    if embed is not None:
        torch.nn.init.uniform_(embed.weight, -0.1, 0.1)
    lstm = NQLSTM(args.embed or V, H, quantizer="bc", norm="none")
    out = torch.nn.Linear(H, V)
    names = [f"lstm.{k}" for k, _ in lstm.named_parameters()] + ["softmax.weight", "softmax.bias"]
    params = list(lstm.parameters()) + list(out.parameters())
    if embed is not None:
        names.append("embedding.weight")
        params.append(embed.weight)
    opt = torch.optim.Adam(params, lr=0.002)
    state = None
    for u in range(args.updates):
        x, y = cols[u * T:(u + 1) * T], cols[u * T + 1:(u + 1) * T + 1]
        h, state = lstm(embed(x) if embed is not None else F.one_hot(x, V).float(), state)
        state = tuple(t.detach() for t in state)
        loss = F.cross_entropy(out(h).reshape(-1, V), y.reshape(-1), reduction="sum")
        tokens = y.numel()
        opt.zero_grad()
        (loss if args.mode == "sum" else loss / tokens).backward()
        if args.mode == "sum":
            for q in params:
                q.grad.div_(tokens)
        finite = all(bool(torch.isfinite(q.grad).all()) for q in params)
        if args.mode == "mean64":
            norms = [q.grad.double().norm().item() for q in params]
            norm = math.sqrt(sum(v * v for v in norms))
            for q in params:
                q.grad.mul_(min(1.0, 5.0 / (norm + 1e-6)))
            print("  gradient norms: " + ", ".join(f"{k} {v:.3g}" for k, v in zip(names, norms)))
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, 5.0).item()
        print(f"{args.mode} update {u + 1}: bpc {loss.item() / tokens / math.log(2):.3f}, "
              f"gradient norm {norm:.3g}, every entry finite: {finite}", flush=True)
        if not finite:
            break
        opt.step()


if __name__ == "__main__":
    main()
