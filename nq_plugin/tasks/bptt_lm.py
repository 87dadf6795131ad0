"""fairseq task ``bptt_lm``: language modeling by truncated backpropagation through time.

Each split is one token stream: an end-of-sentence symbol, then every line of the binarized
split with its end-of-sentence symbol (so every line end is predicted, as the paper counts).
The stream is cut into B contiguous columns (B = --batch-size; with N data-parallel workers,
N * B columns of which each worker takes its own B) and batches are consecutive segments of
--tokens-per-sample steps, in order, never shuffled: segment k has inputs x[kT : kT + T] and
targets x[kT + 1 : kT + T + 1], so no target is lost at a segment boundary. The model carries
(h, c) from one segment to the next of the same split (``stream`` and ``first_segment`` in
``net_input``), as in Hou et al. (NeurIPS 2019) and Cooijmans et al. (ICLR 2017).
``fairseq-eval-lm`` uses the same batches (``eval_lm_dataloader``), with the state carried too;
``--batch-size 1`` (the default there) scores the split as one uninterrupted stream.
"""

import logging
import math
import os
from dataclasses import dataclass, field
import numpy as np
import torch
from fairseq import utils
from fairseq.data import Dictionary, FairseqDataset, data_utils, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task

from ..errors import DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)


@dataclass
class BPTTLMConfig(FairseqDataclass):
    data: str = field(default="???", metadata={"help": "path to the fairseq-preprocess output "
                                                       "(dict.txt, train/valid/test .bin/.idx)"})
    tokens_per_sample: int = field(
        default=100, metadata={"help": "BPTT length: time steps per segment"})


class TokenStream(FairseqDataset):
    """One split as a single 1-D token stream (what ``task.dataset(split)`` returns)."""

    def __init__(self, name: str, tokens: torch.Tensor):
        self.name = name
        self.tokens = tokens

    def __len__(self):  # number of predicted tokens
        return max(len(self.tokens) - 1, 0)

    def __getitem__(self, index):
        return self.tokens[index]

    @property
    def sizes(self):
        return torch.ones(len(self), dtype=torch.long).numpy()


class BPTTSegments(FairseqDataset):
    """The segments of a stream for one data-parallel worker; item k is a whole batch."""

    def __init__(self, stream: TokenStream, columns: int, steps: int, shard_id: int = 0,
                 num_shards: int = 1):
        if columns < 1 or steps < 1:
            raise ValueError(f"--batch-size and --tokens-per-sample must be >= 1, got "
                             f"{columns} and {steps}")
        self.stream_name = stream.name
        total = columns * num_shards
        length = len(stream.tokens) // total
        if length < 2:
            raise ValueError(f"split {stream.name!r} has {len(stream.tokens)} tokens: too few for "
                             f"{total} columns of at least 2 tokens; lower --batch-size")
        grid = stream.tokens[: length * total].view(total, length)
        self.columns = grid[shard_id * columns:(shard_id + 1) * columns]  # (B, L)
        self.steps = steps
        self.num_segments = (length - 1 + steps - 1) // steps

    def __len__(self):
        return self.num_segments

    def __getitem__(self, k):
        start = k * self.steps
        end = min(start + self.steps, self.columns.shape[1] - 1)
        return k, self.columns[:, start:end], self.columns[:, start + 1:end + 1]

    def collater(self, items):
        assert len(items) == 1, "each BPTT item is a whole batch"
        k, source, target = items[0]
        batch, steps = source.shape
        return {
            "id": torch.arange(batch) + k * batch,
            "nsentences": batch,
            "ntokens": target.numel(),
            "net_input": {
                "src_tokens": source.contiguous(),
                "src_lengths": torch.full((batch,), steps, dtype=torch.long),
                "stream": self.stream_name,
                "first_segment": k == 0,
            },
            "target": target.contiguous(),
        }

    def num_tokens(self, index):
        return self.columns.shape[0] * self.steps

    def size(self, index):
        return self.steps


_MMAP_MAGIC = b"MMIDIDX\x00\x00"
_DTYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 8, 8: 2}  # fairseq's dtype codes


class InferenceSentences(FairseqDataset):
    """Sentences given to the hub interface, one sample each: ``src_tokens`` = eos + the
    sentence (its trailing eos removed), ``target`` = the sentence + eos; right-padded."""

    def __init__(self, src_tokens, src_lengths, dictionary: Dictionary):
        eos = dictionary.eos()
        self.items = []
        for tokens in src_tokens:
            tokens = torch.as_tensor(tokens, dtype=torch.long)
            if len(tokens) and int(tokens[-1]) == eos:
                tokens = tokens[:-1]
            self.items.append(tokens)
        self.pad, self.eos = dictionary.pad(), eos
        self._sizes = np.array([len(t) + 1 for t in self.items])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return {"id": index, "tokens": self.items[index]}

    @property
    def sizes(self):
        return self._sizes

    def num_tokens(self, index):
        return int(self._sizes[index])

    def size(self, index):
        return int(self._sizes[index])

    def ordered_indices(self):
        return np.arange(len(self))

    def collater(self, samples):
        if not samples:
            return {}
        src = [torch.cat([torch.tensor([self.eos]), s["tokens"]]) for s in samples]
        tgt = [torch.cat([s["tokens"], torch.tensor([self.eos])]) for s in samples]
        lengths = torch.tensor([len(x) for x in src])
        return {"id": torch.tensor([s["id"] for s in samples]),
                "nsentences": len(samples), "ntokens": int(sum(len(x) for x in tgt)),
                "net_input": {"src_tokens": data_utils.collate_tokens(src, self.pad),
                              "src_lengths": lengths},
                "target": data_utils.collate_tokens(tgt, self.pad)}


def check_mmap_split(path: str) -> None:
    """Check a fairseq mmap split (PATH.idx + PATH.bin) before fairseq maps it: the index
    header and table are complete and the data file holds exactly the tokens they describe.
    (fairseq itself fails on a damaged pair with a buffer error and a second traceback from its
    destructor.)"""
    import struct
    idx, data = path + ".idx", path + ".bin"
    if not (os.path.isfile(idx) and os.path.isfile(data)):
        return  # missing: load_indexed_dataset returns None and the caller says so
    with open(idx, "rb") as f:
        header = f.read(26)
        if header[:9] != _MMAP_MAGIC:
            return  # another dataset implementation: fairseq checks it
        if len(header) < 26:
            raise DataFormatError(f"{idx} is truncated (incomplete header); binarize the split "
                                  "again (fairseq-preprocess --only-source)")
        code = header[17]
        (count,) = struct.unpack("<Q", header[18:26])
        sizes = np.fromfile(f, dtype=np.int32, count=count)
        size_of_table = 26 + count * 12
    if len(sizes) != count or os.path.getsize(idx) < size_of_table or code not in _DTYPE_SIZES:
        raise DataFormatError(f"{idx} is truncated or corrupt (its table of {count} entries is "
                              "incomplete); binarize the split again (fairseq-preprocess "
                              "--only-source)")
    expected = int(sizes.astype(np.int64).sum()) * _DTYPE_SIZES[code]
    if os.path.getsize(data) != expected:
        raise DataFormatError(f"{data} holds {os.path.getsize(data)} bytes, its index {idx} "
                              f"describes {expected}: truncated or corrupt; binarize the split "
                              "again (fairseq-preprocess --only-source)")


def statistics_steps(model) -> int:
    """Time steps with their own normalization statistics in a model (1: shared or none)."""
    from ..nn.lstm import NQLSTMLayer
    from ..packed.lstm import PackedNQLSTM
    steps = 1
    for module in model.modules():
        if isinstance(module, NQLSTMLayer):
            steps = max(steps, module.hh_norm.statistics_steps())
        elif isinstance(module, PackedNQLSTM):
            steps = max(steps, module.norm_steps)
    return steps


@register_task("bptt_lm", dataclass=BPTTLMConfig)
class BPTTLMTask(FairseqTask):
    """Truncated-BPTT language modeling over contiguous streams with carried hidden state."""

    def __init__(self, cfg: BPTTLMConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary

    @classmethod
    def setup_task(cls, cfg: BPTTLMConfig, **kwargs):
        paths = utils.split_paths(cfg.data)
        if not paths or not os.path.isfile(os.path.join(paths[0], "dict.txt")):
            raise DataNotFoundError(
                f"no dict.txt in data directory {cfg.data!r}: give the --destdir of "
                "fairseq-preprocess --only-source (see the README)")
        dictionary = Dictionary.load(os.path.join(paths[0], "dict.txt"))
        logger.info("dictionary: %d types", len(dictionary))
        return cls(cfg, dictionary)

    DIVERGENCE_UPDATES = 10  # consecutive updates far above a uniform guess before the hint

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's step, watching for a loss that only grows: per-token loss above 3 x ln(V)
        (three times a uniform guess) for 10 updates in a row, or not finite, gets the
        quantized-LSTM hint once -- before fairseq stops on NaN gradients, or instead of
        silently training a diverged model."""
        loss, sample_size, logging_output = super().train_step(
            sample, model, criterion, optimizer, update_num, ignore_grad)
        per_token = float(loss.detach()) / max(float(sample_size), 1.0)
        limit = 3 * math.log(max(len(self.dictionary), 2))
        bad = not math.isfinite(per_token) or per_token > limit
        self._diverging = getattr(self, "_diverging", 0) + 1 if bad else 0
        if self._diverging >= self.DIVERGENCE_UPDATES and not getattr(self, "_hinted", False):
            self._hinted = True
            logger.warning(
                "nq_plugin: training is diverging: the loss per token (%.3g nats) has stayed above "
                "3 x ln(vocabulary) = %.2f for %d updates. For quantized LSTMs: train with a "
                "normalization (--norm weight, layer or batch), lower --lr, and check the "
                "gradient flow with --log-grad-norms 1 and nq-analyze (docs/diagnostics.md)",
                per_token, limit, self._diverging)
        return loss, sample_size, logging_output

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        steps = statistics_steps(model)
        if steps > 1 and steps != int(self.cfg.tokens_per_sample):
            logger.warning(
                "this model keeps batch-norm statistics per step for %d steps, but "
                "--tokens-per-sample is %d: step t of every segment uses statistics learnt for "
                "step t of a %d-step window, so the numbers differ from training's; pass "
                "--tokens-per-sample %d (fairseq-eval-lm does not read it from the checkpoint)",
                int(steps), self.cfg.tokens_per_sample, int(steps), int(steps))
        return model

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        check_mmap_split(path)
        try:
            lines = data_utils.load_indexed_dataset(path, self.dictionary, combine=combine)
        except Exception as err:  # fairseq / numpy errors on a damaged index or data file
            raise DataFormatError(f"{path}.idx / {path}.bin cannot be read ({type(err).__name__}: "
                                  f"{err}): truncated or corrupt; binarize the split again "
                                  "(fairseq-preprocess --only-source)") from None
        if lines is None:
            raise DataNotFoundError(f"split {split!r} not found at {path}.bin/.idx: binarize it "
                                    "with fairseq-preprocess --only-source")
        eos = self.dictionary.eos()
        parts = [torch.tensor([eos], dtype=torch.long)]
        try:
            parts += [lines[i].long() for i in range(len(lines))]
        except Exception as err:  # a .bin shorter than its .idx says
            raise DataFormatError(f"{path}.bin does not hold what {path}.idx describes "
                                  f"({type(err).__name__}: {err}): truncated or corrupt; "
                                  "binarize the split again") from None
        stream = torch.cat(parts)
        if int(stream.max()) >= len(self.dictionary) or int(stream.min()) < 0:
            raise DataFormatError(f"{path}.bin holds symbol ids outside dict.txt "
                                  f"({len(self.dictionary)} symbols): the data and the "
                                  "dictionary do not belong together, or the file is corrupt")
        self.datasets[split] = TokenStream(split, stream)
        logger.info("%s: %d tokens", split, len(self.datasets[split]))

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None,
                           max_positions=None, ignore_invalid_inputs=False,
                           required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
                           num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False, **kwargs):
        if isinstance(dataset, InferenceSentences):  # fairseq's hub interface: sentences
            return super().get_batch_iterator(
                dataset, max_tokens=max_tokens, max_sentences=max_sentences,
                max_positions=max_positions, ignore_invalid_inputs=ignore_invalid_inputs,
                required_batch_size_multiple=required_batch_size_multiple, seed=seed,
                num_shards=num_shards, shard_id=shard_id, num_workers=0, epoch=epoch,
                data_buffer_size=data_buffer_size, disable_iterator_cache=True)
        if not isinstance(dataset, TokenStream):
            raise TypeError("bptt_lm batches TokenStream datasets (from its load_dataset) and "
                            "the sentences of build_dataset_for_inference")
        columns = max_sentences
        if columns is None:  # --max-tokens alone: as many columns as fit in that many tokens
            columns = (max_tokens or 0) // self.cfg.tokens_per_sample
            if columns < 1:
                raise ValueError(
                    f"bptt_lm: --max-tokens {max_tokens} is less than one segment of "
                    f"--tokens-per-sample {self.cfg.tokens_per_sample}; give --batch-size "
                    "(the number of columns) or a --max-tokens of at least one segment")
        segments = BPTTSegments(dataset, columns, self.cfg.tokens_per_sample, shard_id,
                                num_shards)
        # num_workers=0: a batch is a slice of an in-memory tensor, and a loader process would
        # only add its start-up (seconds per epoch) -- so --num-workers is ignored here
        return iterators.EpochBatchIterator(
            dataset=segments, collate_fn=segments.collater,
            batch_sampler=[[k] for k in range(len(segments))], seed=seed, num_shards=1,
            shard_id=0, num_workers=0, epoch=epoch, buffer_size=data_buffer_size,
            disable_shuffling=True, skip_remainder_batch=False)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None,
                           num_shards=1, shard_id=0, num_workers=1, data_buffer_size=10,
                           context_window=0):
        if context_window > 0:
            raise ValueError("bptt_lm carries the hidden state across segments; "
                             "--context-window does not apply (leave it at 0)")
        return self.get_batch_iterator(
            dataset, max_sentences=batch_size or 1, num_shards=num_shards, shard_id=shard_id,
            num_workers=num_workers, data_buffer_size=data_buffer_size,
        ).next_epoch_itr(shuffle=False)

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Sentences for fairseq's ``GeneratorHubInterface`` (``score``, ``sample``,
        ``generate``) and ``fairseq-interactive``: each sentence is its own stream from the zero
        state, input = end-of-sentence + the sentence's symbols, target = the symbols (so
        ``score`` counts each symbol once, as :meth:`nq_plugin.zoo.lm.ZooLM.score` does)."""
        return InferenceSentences(src_tokens, src_lengths, self.dictionary)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Generation continues each sentence: its symbols are the prefix, conditioned on the
        end-of-sentence symbol every stream starts with (as fairseq's language_modeling)."""
        if constraints is not None:
            raise NotImplementedError("bptt_lm: constrained decoding is not supported")
        with torch.no_grad():
            eos = self.dictionary.eos()
            if prefix_tokens is None and sample["net_input"]["src_tokens"].nelement():
                prefix_tokens = sample["net_input"]["src_tokens"]
                if prefix_tokens[:, 0].eq(eos).all():
                    prefix_tokens = prefix_tokens[:, 1:]
            return generator.generate(models, sample, prefix_tokens=prefix_tokens,
                                      bos_token=eos)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary
