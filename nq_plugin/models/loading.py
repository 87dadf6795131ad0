"""One way from a checkpoint of the plugin to its model, used by ``nq-summary``, ``nq-pack`` and
``nq-zoo add``: the checkpoint is read with the safe loader (:func:`nq_plugin.checkpoint.
load_checkpoint`), its model configuration merged into the registered dataclass (keys of older
versions dropped, as fairseq does), the model built by its own ``build_model`` and its weights
loaded through :class:`~nq_plugin.models.checked_loading.CheckedLoading` (shapes, NaN/inf).
No data directory is needed: a language model without its dictionary gets a stand-in of the
right size (enough for sizes; pass the real one to generate or pack)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, Optional, Tuple

from fairseq.data import Dictionary
from fairseq.dataclass.utils import merge_with_parent
from fairseq.models import ARCH_MODEL_NAME_REGISTRY, ARCH_MODEL_REGISTRY, MODEL_DATACLASS_REGISTRY
from omegaconf import OmegaConf

from ..checkpoint import CheckpointError, load_checkpoint, model_config
from ..storage import tensor_shape
from .checked_loading import CheckedLoading


def _stand_in_dictionary(size: int) -> Dictionary:
    d = Dictionary()
    while len(d) < size:
        d.add_symbol(f"<symbol{len(d)}>")
    return d


def _first_layer_shape(weights: Dict[str, Any], suffix: str):
    for key in weights:
        if key.endswith("lstm.layers.0." + suffix):
            return tensor_shape(weights, key)
    return None


def model_class(state: Dict[str, Any], source: str = "checkpoint") -> type:
    """The registered model class of a loaded checkpoint ``state`` (one of the plugin's)."""
    arch = str(model_config(state).get("_name") or "")
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is None or not issubclass(model_cls, CheckedLoading):
        raise CheckpointError(f"{source} holds model {arch!r}, not a model of nq_plugin")
    return model_cls


def model_from_state(state: Dict[str, Any], dictionary: Optional[Dictionary] = None,
                     source: str = "checkpoint"):
    """The plugin's fairseq model of a loaded checkpoint ``state``, weights loaded, eval mode."""
    cfg = model_config(state)
    arch = str(cfg.get("_name") or "")
    model_cls = model_class(state, source)
    dataclass = MODEL_DATACLASS_REGISTRY[ARCH_MODEL_NAME_REGISTRY[arch]]
    model_cfg = merge_with_parent(dataclass(), OmegaConf.create(cfg), remove_missing=True)
    weights = state["model"]
    if dictionary is None:  # shapes as decoded: a stored tensor's parts have others
        out = tensor_shape(weights, "decoder.output_projection.weight")
        dictionary = _stand_in_dictionary(out[0]) if out is not None else None
    w_ih = _first_layer_shape(weights, "weight_ih")
    task = SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary,
                           cfg=SimpleNamespace(pixels_per_step=(
                               w_ih[1] if w_ih is not None else 1)))
    try:
        model = model_cls.build_model(model_cfg, task)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{source}: its configuration does not build a model ({err})") \
            from None
    try:
        model.load_state_dict(weights, strict=True, model_cfg=model_cfg)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None
    model.eval()
    return model


def load_model(path: str, dictionary: Optional[Dictionary] = None
               ) -> Tuple[Any, Dict[str, Any]]:
    """(model, checkpoint state) of the checkpoint at ``path``."""
    state = load_checkpoint(path)
    return model_from_state(state, dictionary, source=path), state
