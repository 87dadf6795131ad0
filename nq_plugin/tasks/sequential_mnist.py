"""fairseq task ``sequential_mnist``: classify MNIST digits read pixel by pixel (Le et al. 2015;
Cooijmans et al., ICLR 2017; Hou et al., NeurIPS 2019, appendix A.3), optionally in a fixed
random pixel order (pMNIST, ``--permute``).

Splits: train = first 50,000 training images, valid = last 10,000 (``--valid-size``), test = the
10,000 test images. Pixels are scaled to [0, 1] (``--standardize``: mean 0.1307, std 0.3081).
``--pixels-per-step 28`` reads a row per step (28 steps; quick experiments and tests).
"""
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from fairseq.data import Dictionary, FairseqDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task

from ..data.mnist import load_mnist, pixel_permutation, to_sequence
from ..errors import DataNotFoundError

logger = logging.getLogger(__name__)


@dataclass
class SequentialMNISTConfig(FairseqDataclass):
    data: str = field(default="???", metadata={
        "help": "directory with the four MNIST idx files (gzipped or not)"})
    permute: bool = field(default=False, metadata={"help": "permuted MNIST (fixed pixel order)"})
    permute_seed: int = field(default=0, metadata={
        "help": "seed of the fixed pMNIST permutation (recorded in the checkpoint config)"})
    pixels_per_step: int = field(default=1, metadata={
        "help": "pixels read per time step (1: the paper's 784 steps; 28: one row per step)"})
    standardize: bool = field(default=False, metadata={
        "help": "standardize pixels with the training mean/std instead of scaling to [0, 1]"})
    valid_size: int = field(default=10000, metadata={
        "help": "last training images held out for validation"})
    no_verify_checksums: bool = field(default=False, metadata={
        "help": "skip the SHA-256 check of the standard files"})


class SequenceClassificationDataset(FairseqDataset):
    """Fixed-length sequences (N, T, F) with integer labels; a batch is a set of images."""

    def __init__(self, sequences: torch.Tensor, labels: torch.Tensor):
        self.sequences = sequences
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return index, self.sequences[index], self.labels[index]

    def collater(self, samples):
        if not samples:
            return {}
        ids, xs, ys = zip(*samples)
        x = torch.stack(xs)
        return {"id": torch.tensor(ids), "nsentences": len(ids), "ntokens": x.shape[0] * x.shape[1],
                "net_input": {"pixels": x}, "target": torch.stack(ys)}

    def num_tokens(self, index):
        return self.sequences.shape[1]

    def size(self, index):
        return self.sequences.shape[1]

    @property
    def sizes(self):
        return np.full(len(self), self.sequences.shape[1], dtype=np.int64)

    def ordered_indices(self):
        return np.random.permutation(len(self))  # under fairseq's numpy_seed(seed + epoch)


@register_task("sequential_mnist", dataclass=SequentialMNISTConfig)
class SequentialMNISTTask(FairseqTask):
    """Sequential (and permuted) MNIST classification with an LSTM."""

    def __init__(self, cfg: SequentialMNISTConfig):
        super().__init__(cfg)
        self.permutation = pixel_permutation(cfg.permute_seed if cfg.permute else None)
        self._splits = None
        # fairseq's generic machinery expects dictionaries; the labels 0-9 are plain integers
        self.dictionary = Dictionary()

    @classmethod
    def setup_task(cls, cfg: SequentialMNISTConfig, **kwargs):
        if not os.path.isdir(cfg.data):
            raise DataNotFoundError(f"MNIST directory {cfg.data!r} not found: pass the folder "
                                    "with the idx files (recipes/smnist/prepare.sh fetches them)")
        return cls(cfg)

    @property
    def steps(self) -> int:
        return 784 // self.cfg.pixels_per_step

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        if split not in ("train", "valid", "test"):
            raise ValueError(f"sequential_mnist has splits train, valid, test; got {split!r}")
        if self._splits is None:
            self._splits = load_mnist(self.cfg.data, self.cfg.valid_size,
                                      verify=not self.cfg.no_verify_checksums)
            if self.permutation is not None:
                logger.info("pMNIST: permutation of seed %d, first pixels %s",
                            self.cfg.permute_seed, self.permutation[:8].tolist())
        pixels, labels = self._splits[split]
        x = to_sequence(pixels, self.permutation, self.cfg.pixels_per_step, self.cfg.standardize)
        self.datasets[split] = SequenceClassificationDataset(x, labels)
        logger.info("%s: %d images, %d steps of %d pixels", split, len(labels), x.shape[1],
                    x.shape[2])

    def max_positions(self):
        return self.steps

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary
