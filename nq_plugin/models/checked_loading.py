"""``CheckedLoading``: fairseq's ``load_state_dict`` (resume, eval-lm, the Hub loader) with NaN /
inf parameters refused naming the tensor, and tensors that do not fit the configuration (wrong
shapes, missing or extra tensors) reported as a :class:`nq_plugin.checkpoint.CheckpointError`."""
from ..checkpoint import CheckpointError, check_finite


class CheckedLoading:
    """Mixin for the plugin's fairseq models; put it before the fairseq base class."""

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_finite(state_dict, "checkpoint")
        try:
            return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg,
                                           args=args)
        except RuntimeError as err:  # missing / unexpected tensors, wrong shapes
            raise CheckpointError(f"the checkpoint's tensors do not fit its model configuration "
                                  f"({str(err).splitlines()[-1].strip()}): the file is damaged or "
                                  "was edited; use the original or retrain") from None
