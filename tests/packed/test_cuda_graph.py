"""CUDAGraphLSTM: on CPU it runs the module directly; on a GPU (tests skip without one) replayed
steps equal the module's own forward, generation-style with the state carried past T_max."""
import pytest
import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.packed import PackedNQLSTM
from nq_plugin.packed.cuda_graph import CUDAGraphLSTM


def _packed(quantizer, norm, stats="shared"):
    torch.manual_seed(0)
    m = NQLSTM(20, 32, 2, quantizer=quantizer, norm=norm, bn_stats=stats, bn_max_steps=3)
    with torch.no_grad():
        m(torch.randn(4, 5, 20))  # training-mode statistics
    return m.eval(), PackedNQLSTM.from_lstm(m.eval())


def test_on_cpu_the_wrapper_runs_the_module():
    _, packed = _packed("bc", "batch", "separate")
    wrapped = CUDAGraphLSTM(packed)
    x = torch.randn(1, 2, 20)
    with torch.no_grad():
        a, (ha, ca) = wrapped(x, None, 5)
        b, (hb, cb) = packed(x, None, 5)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert not wrapped._recordings


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("quantizer,norm,stats", [("bc", "weight", "shared"),
                                                  ("tc", "batch", "separate"),
                                                  ("twn", "power", "shared"),
                                                  ("bc", "layer", "shared")])
def test_replayed_generation_steps_equal_the_module(quantizer, norm, stats):
    unpacked, packed = _packed(quantizer, norm, stats)
    packed = packed.cuda()
    wrapped = CUDAGraphLSTM(packed)
    x = torch.randn(7, 3, 20)
    state = ref_state = None
    with torch.no_grad():
        for t in range(7):  # one step per call, past the 3 per-step statistics slots
            out, state = wrapped(x[t:t + 1].cuda(), state, t)
            ref, ref_state = unpacked(x[t:t + 1], ref_state, t0=t)
            torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(state[1].cpu(), ref_state[1], atol=1e-5, rtol=0)
    # first call without a state (slot 0), then one recording per further slot (1, 2)
    assert len(wrapped._recordings) == (3 if stats == "separate" else 2)
    other = PackedNQLSTM.from_lstm(_packed(quantizer, norm, stats)[0]).cuda()
    with torch.no_grad():
        for p in other.buffers():
            if p.is_floating_point():
                p.mul_(0.5)  # other weights
        packed.load_state_dict(other.state_dict())  # in place: recordings must not be replayed
        out, _ = wrapped(x[:1].cuda(), None, 0)
        torch.testing.assert_close(out, other(x[:1].cuda())[0], atol=1e-6, rtol=0)
    assert len(wrapped._recordings) == 1
    packed.half()  # buffers moved: recordings are dropped, not replayed on stale memory
    with torch.no_grad():
        wrapped(x[:1].cuda().half(), None, 0)
    assert len(wrapped._recordings) == 1
