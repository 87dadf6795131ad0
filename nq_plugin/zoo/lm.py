"""A loaded zoo language model with fairseq hub-interface style ``score`` and ``sample``.

fairseq's ``GeneratorHubInterface.sample`` goes through ``SequenceGenerator`` and the stock
``language_modeling`` dataset code, which breaks with numpy >= 2 (``np.compat``) and does not
know the carried state of ``bptt_lm``; this class drives the model's incremental decoding
directly (state and step index carried, so per-step batch-norm statistics are used as in
training), for the unpacked and the packed (``nq-pack``) model alike.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import torch

from ..checkpoint import load_checkpoint
from .text_formats import decode, encode, symbol_ids, text_format


class ZooLM(torch.nn.Module):
    """``score(text)`` -> bits per symbol; ``sample(prompt)`` -> text continuing the prompt."""

    def __init__(self, model, task, cfg, text_format: str = "ptb_char"):
        super().__init__()
        self.models = torch.nn.ModuleList([model])
        self.task, self.cfg, self.text_format = task, cfg, text_format
        self.dictionary = task.target_dictionary
        model.eval()

    @classmethod
    def from_checkpoint(cls, path: str, data: Optional[str] = None,
                        text_format: str = "ptb_char") -> "ZooLM":
        """Load a checkpoint of ``nq_lstm_lm`` or ``nq_lstm_lm_packed``; ``data`` is the folder
        holding its ``dict.txt`` (default: the checkpoint's folder)."""
        from fairseq import checkpoint_utils

        import nq_plugin  # noqa: F401  registers the models and tasks
        load_checkpoint(path)  # the safe loader first: refuses code-executing pickles clearly
        data = data or os.path.dirname(os.path.abspath(path))
        if not os.path.isfile(os.path.join(data, "dict.txt")):
            raise FileNotFoundError(f"{data}/dict.txt not found: the model's dictionary must be "
                                    "beside the checkpoint (or pass data=FOLDER)")
        try:
            models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
                [path], arg_overrides={"data": data})
        except ValueError as err:  # e.g. a packed format version this nq_plugin cannot read
            try:
                named = type(err)(f"{path}: {err}")
            except TypeError:  # an error class with another constructor
                named = ValueError(f"{path}: {err}")
            raise named from None
        return cls(models[0], task, cfg, text_format)

    @property
    def decoder(self):
        return self.models[0].decoder

    @property
    def device(self) -> torch.device:
        """Where the model is (``lm.cuda()`` moves it; generation steps on a GPU replay CUDA
        graphs for the packed model)."""
        for tensor in self.models[0].parameters():
            return tensor.device
        return next(self.models[0].buffers()).device

    def _ids(self, text: str) -> List[int]:
        return symbol_ids(self.text_format, self.dictionary, text)

    @torch.no_grad()
    def score(self, text: str) -> Dict[str, float]:
        """Bits per symbol of ``text`` (every line end scored, as fairseq-eval-lm does)."""
        ids = self._ids(text)
        if not ids:
            raise ValueError("score() needs some text")
        tokens = torch.tensor([[self.dictionary.eos()] + ids])
        logits, _ = self.decoder(tokens[:, :-1].to(self.device))
        logp = torch.log_softmax(logits.float().cpu(), -1)[0]
        nll = -logp.gather(1, tokens[0, 1:, None]).sum().item()
        bits = nll / math.log(2) / len(ids)
        return {"symbols": len(ids), "bits_per_symbol": bits, "perplexity": 2 ** bits}

    @torch.no_grad()
    def sample(self, prompt: str = "", length: int = 200, temperature: float = 1.0,
               seed: Optional[int] = 0) -> str:
        """The prompt followed by ``length`` sampled symbols (decoded back to text)."""
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        d = self.dictionary
        banned = torch.tensor(text_format(self.text_format).banned(d), dtype=torch.long)
        prompt_symbols = encode(self.text_format, prompt)
        ids = [d.eos()] + [d.index(s) for s in prompt_symbols]
        # the decoder's incremental steps without fairseq's incremental-state dict and without
        # re-sending the whole prefix: the prompt in one call, then one symbol a step
        device = self.device
        tokens = torch.tensor([ids], device=device)
        state, t0 = None, 0
        out: List[int] = []
        for _ in range(length):
            logits, state = self.decoder.generation_step(tokens, state, t0)
            t0 += tokens.shape[1]
            logits = logits[0, -1].float().cpu() / temperature
            logits[banned] = -float("inf")
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
            out.append(int(nxt))
            tokens = nxt.view(1, 1).to(device)
        # decoded together, so that the joins are right (spaces between words, "▁" pieces)
        return decode(self.text_format, prompt_symbols + [d[i] for i in out])


def main(argv=None) -> int:
    """``python -m nq_plugin.zoo.lm CHECKPOINT [--data DIR] [--format F] --prompt TEXT``:
    generate from a local checkpoint (packed or not); ``--format spm:MODEL`` decodes
    sentencepiece pieces back to text (the custom_text recipe)."""
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m nq_plugin.zoo.lm", description=main.__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--data", help="folder with the model's dict.txt (default: beside it)")
    p.add_argument("--format", default="ptb_char",
                   help="ptb_char | words | spm:SENTENCEPIECE_MODEL")
    p.add_argument("--prompt", default="")
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        lm = ZooLM.from_checkpoint(a.checkpoint, a.data, a.format)
        print(lm.sample(a.prompt, a.length, a.temperature, a.seed))
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"nq_plugin.zoo.lm: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
