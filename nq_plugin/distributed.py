"""Data-parallel training on CPUs with ``torchrun`` and fairseq's own DDP engine.

Stock fairseq cannot do this: on a machine without CUDA ``--distributed-world-size`` defaults to
1, so under ``torchrun --nproc_per_node N fairseq-train ... --cpu`` every process trains alone
(N unsynchronized copies writing the same checkpoint files); asking for N explicitly divides by
``torch.cuda.device_count()`` (0), and its ``pytorch_ddp`` wrapper passes GPU ``device_ids``
that torch's DistributedDataParallel refuses for CPU modules.

:func:`support_torchrun_on_cpu` wraps ``fairseq.distributed.utils.infer_init_method`` (which
``call_main`` runs before training): only when torchrun's environment (``WORLD_SIZE`` > 1,
``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) is present, no CUDA device exists and the user gave
no init method, it fills in what torchrun already decided -- world size, rank, ``env://``,
no spawning -- and selects fairseq's ``legacy_ddp`` (all-reduce of gradients, CPU-capable)
instead of ``pytorch_ddp``. In every other case fairseq's own function runs unchanged.
Batch-norm statistics stay per worker (buffers are not broadcast), and each worker carries
the hidden state of its own columns (``bptt_lm`` shards by columns).
"""
import logging

import torch

from .backend import torchrun_launch

logger = logging.getLogger(__name__)

def torchrun_world_size() -> int:
    launch = torchrun_launch()
    return int(launch["WORLD_SIZE"]) if launch else 1


def support_torchrun_on_cpu() -> None:
    from fairseq.distributed import utils as dist_utils

    original = dist_utils.infer_init_method
    if getattr(original, "nq_torchrun_on_cpu", False):
        return

    def infer_init_method(cfg, force_distributed=False):
        world = torchrun_world_size()
        if world > 1 and cfg.distributed_init_method is None and not torch.cuda.is_available():
            cfg.distributed_init_method = "env://"
            cfg.distributed_world_size = world
            cfg.distributed_rank = int(torchrun_launch()["RANK"])
            cfg.device_id = 0
            cfg.distributed_no_spawn = True
            if cfg.ddp_backend in ("c10d", "pytorch_ddp"):
                cfg.ddp_backend = "legacy_ddp"
            logger.info("nq_plugin: torchrun on CPU: rank %d of %d, env:// init, ddp backend %s",
                        cfg.distributed_rank, world, cfg.ddp_backend)
            return
        return original(cfg, force_distributed)

    infer_init_method.nq_torchrun_on_cpu = True
    dist_utils.infer_init_method = infer_init_method
