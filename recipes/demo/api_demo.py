"""Offline demo through the Python API: a binarized (BinaryConnect), weight-normalized character
LSTM language model trained for a few hundred updates on the demo text, its validation bits per
character against the unigram entropy, and its size summary as the paper counts it."""
import math
import pathlib
import sys

import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.sizes import summary

HERE = pathlib.Path(__file__).parent / "text"


def symbols(split):
    lines = (HERE / f"{split}.txt").read_text().splitlines()
    return [s for line in lines for s in line.split() + ["</s>"]]


def load():
    splits = {name: symbols(name) for name in ("train", "valid")}
    vocab = {s: i for i, s in enumerate(sorted(set(splits["train"] + splits["valid"])))}
    return [torch.tensor([vocab[s] for s in splits[n]]) for n in ("train", "valid")], vocab


class CharLM(torch.nn.Module):
    def __init__(self, vocab, hidden):
        super().__init__()
        self.vocab = vocab
        self.lstm = NQLSTM(vocab, hidden, quantizer="bc", norm="weight")
        self.out = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        x = torch.nn.functional.one_hot(tokens, self.vocab).float()  # one-hot input as the paper
        h, state = self.lstm(x, state)
        return self.out(h), state


def main(updates=int(sys.argv[1]) if len(sys.argv) > 1 else 300):
    torch.manual_seed(1)
    (train, valid), vocab = load()
    model = CharLM(len(vocab), 128)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    bptt, batch = 50, 8
    cols = train[: len(train) // batch * batch].view(batch, -1).t()  # (T, B) contiguous columns
    state, pos = None, 0
    for update in range(updates):
        if pos + bptt + 1 > cols.shape[0]:
            state, pos = None, 0
        x, y = cols[pos:pos + bptt], cols[pos + 1:pos + bptt + 1]
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)  # carried across segments (truncated BPTT)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        pos += bptt
    model.eval()
    with torch.no_grad():
        logits, _ = model(valid[:-1].unsqueeze(1))
        nll = torch.nn.functional.cross_entropy(logits.squeeze(1), valid[1:]).item()
    counts = torch.bincount(train, minlength=len(vocab)).float() + 1  # add-one smoothing
    p = counts / counts.sum()
    unigram = -(p[valid[1:]]).log2().mean().item()
    print(f"valid BPC after {updates} updates: {nll / math.log(2):.3f} "
          f"(unigram model: {unigram:.3f})")
    summary(model)


if __name__ == "__main__":
    main()
