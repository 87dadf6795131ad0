"""What ``nq-pack`` writes into a packed model's configuration (language model and classifier
alike), and the packed LSTM built from it (its format version checked first)."""
import json
from dataclasses import dataclass, field

from ..packed.format import FORMAT_VERSION, PackedFormatError
from ..packed.lstm import PackedNQLSTM


@dataclass
class PackedConfigMixin:
    packed_layers: str = field(default="[]", metadata={
        "help": "JSON list of the packed LSTM layers (written by nq-pack)"})
    packed_norm_steps: int = field(default=1, metadata={
        "help": "time steps of folded batch-norm statistics (written by nq-pack)"})
    packed_format_version: int = field(default=1, metadata={
        "help": "packed format version of this checkpoint (written by nq-pack; checkpoints "
                "from before the field are version 1)"})


def packed_config(cfg, name: str, lstm: PackedNQLSTM) -> dict:
    """The configuration of packed model ``name``: the trained model's ``cfg`` (a mapping) and
    the packed LSTM's layers."""
    return dict(cfg, _name=name, packed_layers=json.dumps(lstm.metas),
                packed_norm_steps=lstm.norm_steps, packed_format_version=FORMAT_VERSION)


def build_packed_lstm(cfg) -> PackedNQLSTM:
    """The (empty) packed LSTM a packed model's configuration describes."""
    version = int(cfg.get("packed_format_version", 1) or 1)
    if version != FORMAT_VERSION:
        raise PackedFormatError(
            f"this packed checkpoint is format version {version}; this nq_plugin reads "
            f"version {FORMAT_VERSION}: re-pack the original checkpoint with this nq-pack")
    return PackedNQLSTM(json.loads(cfg.packed_layers), cfg.packed_norm_steps)
