"""``CheckedLoading``: fairseq's ``load_state_dict`` (resume, eval-lm, the Hub loader) with NaN /
inf parameters refused naming the tensor, a zoo checkpoint whose tensors differ from the digest
written into it refused naming the file, tensors stored compactly (:mod:`nq_plugin.storage`)
decoded to fp32, a dictionary that is not the model's named as such,
and tensors that do not fit the configuration (wrong shapes, missing or extra tensors) reported
as a :class:`nq_plugin.checkpoint.CheckpointError`."""
import os
from typing import Optional

from ..checkpoint import CheckpointError, check_finite, unseal
from ..storage import StorageError, decode_state


class CheckedLoading:
    """Mixin for the plugin's fairseq models; put it before the fairseq base class.

    ``dictionary_tensor``: the parameter with one row per dictionary symbol (None: the model
    has no dictionary); ``data_dictionary``: the dict.txt the model was built from, when known
    (set by ``build_model`` from the task), for the message."""
    dictionary_tensor: Optional[str] = None
    data_dictionary: Optional[str] = None
    is_packed = False  # the packed inference models (nq-pack's output) say True
    packed_model: Optional[str] = None  # the registered model nq-pack exports this one to
    evaluation_tool = "fairseq-eval-lm"  # how the zoo evaluates it (a classifier: validate)

    @staticmethod
    def remember_dictionary(model, task):
        data = getattr(getattr(task, "cfg", None), "data", None)
        if isinstance(data, str) and data:
            model.data_dictionary = os.path.join(data.split(os.pathsep)[0], "dict.txt")
        return model

    def _check_dictionary(self, state_dict) -> None:
        key = self.dictionary_tensor
        if key is None or key not in state_dict:
            return
        own = dict(self.named_parameters(remove_duplicate=False)).get(key)
        if own is None or state_dict[key].shape[0] == own.shape[0]:
            return
        where = self.data_dictionary or "the data's dict.txt"
        raise CheckpointError(
            f"the model was trained with a dictionary of {state_dict[key].shape[0]} symbols "
            f"(4 special), but {where} has {own.shape[0]}: this is not the model's dictionary. "
            "Evaluate on data binarized with the model's own dict.txt (fairseq-preprocess "
            "--srcdict MODEL_DIR/dict.txt, or the recipe's prepare.sh)")

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        state_dict = unseal(state_dict)  # a zoo checkpoint's digest: verified, then dropped
        try:
            state_dict = decode_state(state_dict)  # compact storage (a zoo model.pt) -> fp32
        except StorageError as err:
            raise CheckpointError(str(err)) from None
        check_finite(state_dict, "checkpoint")
        self._check_dictionary(state_dict)
        try:
            return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg,
                                           args=args)
        except RuntimeError as err:  # missing / unexpected tensors, wrong shapes
            raise CheckpointError(f"the checkpoint's tensors do not fit its model configuration "
                                  f"({str(err).splitlines()[-1].strip()}): the file is damaged or "
                                  "was edited; use the original or retrain") from None
