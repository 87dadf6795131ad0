"""Does an initialisation get a sequential-MNIST model off chance level? Fits the first 100
training images with the recipe's Adam (lr 0.002, clip 1) for --steps full-batch updates and
prints the loss every 20 (the labels' entropy, about 2.26 nats here, is chance level).

    python recipes/smnist/probe_init.py DATA_DIR --norm layer --init chrono [--steps 120]

DATA_DIR: the MNIST files of recipes/smnist/prepare.sh. One thread, seed 0.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from nq_plugin.data.mnist import read_split
from nq_plugin.models.nq_lstm_classifier import NQLSTMClassifier, NQLSTMClassifierConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--quantizer", default="bc")
    ap.add_argument("--norm", default="weight")
    ap.add_argument("--init", default="reference", choices=["reference", "chrono", "uniform"])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    images, labels = read_split(args.data, "train")
    x = torch.tensor(images[:100]).float().div(255).reshape(100, 784, 1)
    y = torch.tensor(labels[:100]).long()
    extra = {"bn_stats": "separate"} if args.norm == "batch" else {}
    noise = 0.1 if args.norm in ("layer", "batch") else 0.0
    cfg = NQLSTMClassifierConfig(hidden_size=100, quantizer=args.quantizer, norm=args.norm,
                                 bn_max_steps=784, layer_norm_gain=0.1, init=args.init,
                                 init_state_noise=noise, **extra)
    model = NQLSTMClassifier(OmegaConf.structured(cfg), 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    start = time.time()
    for step in range(1, args.steps + 1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            print(f"{args.quantizer} {args.norm} {args.init} step {step} loss {loss.item():.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
