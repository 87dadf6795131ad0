"""A normalization added through the public registry: packed and evaluated exactly when it
implements the inference folding, refused at pack time when it does not -- never evaluated
unnormalized."""
import pytest
import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.norm import (NORMALIZATIONS, FoldedNorm, FoldingNotSupported, Normalization,
                            register_normalization)
from nq_plugin.packed import PackedNQLSTM


class FoldedToyScale(FoldedNorm):
    """The toy's inference form: its own scale and shift, applied in Python only (no native or
    fused-step form: the packed model steps in Python)."""

    @classmethod
    def shapes(cls, features, steps):
        return {"toy_scale": (features,), "toy_shift": (features,)}

    def apply(self, y, t):
        return torch.addcmul(self.tensors["toy_shift"], y, self.tensors["toy_scale"])


class ToyScale(Normalization):
    """N(y) = s * y + beta, a learned per-feature scale (no statistics); with inference folding."""

    name = "toy_scale"
    acts_on_activations = True

    def __init__(self, features, blocks=4):
        super().__init__(features, blocks)
        self.scale = torch.nn.Parameter(torch.linspace(0.5, 2.0, features))
        self.shift = torch.nn.Parameter(torch.linspace(-0.1, 0.1, features))

    def step(self, y, t):
        return torch.addcmul(self.shift, y, self.scale)

    def sequence(self, y, t0=0):
        return torch.addcmul(self.shift, y, self.scale)

    def affine(self):
        return self.scale, self.shift

    def counted_parameters(self):
        return 2 * self.features

    folded_type = FoldedToyScale

    def fold(self):
        return FoldedToyScale({"toy_scale": self.scale.detach().float().clone(),
                               "toy_shift": self.shift.detach().float().clone()})


class ToyUnfoldable(ToyScale):
    """The same normalization without an inference folding (the base class's)."""

    name = "toy_unfoldable"
    folded_type = Normalization.folded_type
    fold = Normalization.fold


@pytest.fixture
def registered():
    for cls in (ToyScale, ToyUnfoldable):
        register_normalization(cls)
    yield
    for cls in (ToyScale, ToyUnfoldable):
        NORMALIZATIONS.pop(cls.name, None)


@pytest.mark.parametrize("quantizer", ["bc", "tc", "twn"])
def test_a_toy_normalization_with_folding_packs_and_evaluates_exactly(registered, quantizer):
    torch.manual_seed(0)
    lstm = NQLSTM(6, 8, 2, quantizer=quantizer, norm="toy_scale").eval()
    x = torch.randn(7, 3, 6)
    with torch.no_grad():
        ref, (h, c) = lstm(x)
        packed = PackedNQLSTM.from_lstm(lstm)
        out, (ph, pc) = packed(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pc, c, atol=1e-5, rtol=1e-5)
    # the normalization really acts: without it the output differs
    with torch.no_grad():
        for layer in packed.layers:
            layer.hh_toy_scale.fill_(1.0)
        changed, _ = packed(x)
    assert (changed - ref).abs().max() > 1e-3


def test_a_toy_normalization_without_folding_is_refused_at_pack_time(registered):
    lstm = NQLSTM(6, 8, 1, quantizer="bc", norm="toy_unfoldable").eval()
    with pytest.raises(FoldingNotSupported, match="toy_unfoldable.*no inference folding.*"
                                                  "cannot be packed"):
        PackedNQLSTM.from_lstm(lstm)


def test_the_toy_normalizations_train_through_both_loops(registered):
    """Registered kinds run the hand-written-backward loop like the built-in ones."""
    torch.manual_seed(1)
    lstm = NQLSTM(4, 5, 1, quantizer="bc", norm="toy_scale")
    x = torch.randn(6, 3, 4)
    out, _ = lstm(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in lstm.parameters()]
    lstm.zero_grad()
    lstm.layers[0].loop_impl = "autograd"
    out2, _ = lstm(x)
    out2.sum().backward()
    torch.testing.assert_close(out2, out)
    for g, p in zip(grads, lstm.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-5)
