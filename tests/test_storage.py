"""nq_plugin/storage.py: the encodings, the stored state's round trip and record, the storage
plan of a model, and what a damaged record says."""
import pytest
import torch

from nq_plugin.nn.lstm import NQLSTM
from nq_plugin.storage import (ENCODINGS, SCALE_SUFFIX, SHAPE_SUFFIX, STORAGE_KEY, StorageError,
                               decode_state, encode_state, latent_weights, quantized_digest,
                               storage_encodings, storage_plan, stored_bytes, tensor_shape)


def test_int8_rows_round_trip_is_within_half_a_step_per_row():
    torch.manual_seed(0)
    t = torch.randn(6, 10) * torch.tensor([1e-3, 1, 5, 0, 2, 1e4])[:, None]
    enc = ENCODINGS["int8_rows"]
    parts = enc.encode(t)
    assert parts[""].dtype == torch.int8 and parts[SCALE_SUFFIX].shape == (6,)
    step = t.abs().amax(1) / 127
    err = (enc.decode(parts) - t).abs()
    assert bool((err <= step[:, None] / 2 * (1 + 1e-5) + 1e-12).all())
    assert bool((enc.decode(parts)[3] == 0).all())  # an all-zero row stays zero (scale 1)
    moved = enc.step(parts, torch.eye(6, 10, dtype=torch.bool), torch.ones(6, 10))
    diff = moved[""].int() - parts[""].int()
    assert diff.sum() == int((parts[""].diagonal() < 127).sum()) and diff.abs().max() == 1


@pytest.mark.parametrize("bits", [6, 5, 4])
@pytest.mark.parametrize("shape", [(7, 13), (3, 4, 5)])
def test_packed_int_rows_round_trip_the_per_row_rule_in_bits_per_entry(bits, shape):
    torch.manual_seed(bits)
    t = torch.randn(*shape) * torch.logspace(-3, 4, shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
    t[1] = 0
    enc = ENCODINGS[f"int{bits}_rows"]
    parts = enc.encode(t)
    count = t.numel()
    assert parts[""].dtype == torch.uint8 and parts[""].numel() == -(-count * bits // 8)
    assert parts[SHAPE_SUFFIX].tolist() == list(shape) and parts[SCALE_SUFFIX].shape == (shape[0],)
    qmax = 2 ** (bits - 1) - 1
    rows = t.reshape(shape[0], -1)
    scale = torch.where(rows.abs().amax(1) > 0, rows.abs().amax(1) / qmax, torch.ones(shape[0]))
    codes = torch.round(rows / scale[:, None]).clamp(-qmax, qmax)
    expected = (codes * scale[:, None]).reshape(shape)
    assert torch.equal(enc.decode(parts), expected)  # the rule, entry for entry
    assert bool((enc.decode(parts)[1] == 0).all())
    # every code value survives the packing, the extremes included
    ramp = torch.arange(-qmax, qmax + 1, dtype=torch.float32).repeat(3, 1)
    assert torch.equal(enc.decode(enc.encode(ramp)), ramp)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask.view(-1)[::3] = True
    moved = enc.step(parts, mask, torch.ones(shape))
    diff = (enc.decode(moved) - enc.decode(parts)).reshape(shape[0], -1) / scale[:, None]
    at_top = codes == qmax
    assert torch.allclose(diff, (mask.reshape(shape[0], -1) & ~at_top).float(), atol=1e-4)
    with pytest.raises(StorageError, match="cannot hold a tensor"):
        enc.decode(dict(parts, **{"": parts[""][:-1]}))


@pytest.mark.parametrize("name,dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_casts_round_and_step_one_representable_value(name, dtype):
    t = torch.tensor([[0.1, -0.3, 1.0]])
    enc = ENCODINGS[name]
    parts = enc.encode(t)
    assert parts[""].dtype == dtype
    assert torch.equal(enc.decode(parts), t.to(dtype).float())
    up = enc.step(parts, torch.tensor([[True, False, True]]), torch.ones(1, 3))[""]
    assert up[0, 0] > parts[""][0, 0] and up[0, 1] == parts[""][0, 1] and up[0, 2] > 1
    assert up[0, 0] == torch.nextafter(parts[""][0, 0], torch.tensor(2.0, dtype=dtype))


def _lstm(quantizer, norm="weight", hidden=64):
    torch.manual_seed(1)
    return NQLSTM(40, hidden, quantizer=quantizer, norm=norm).eval()


@pytest.mark.parametrize("quantizer", ["bc", "tc"])
def test_plan_stores_quantized_latents_in_int8_exactly(quantizer):
    lstm = _lstm(quantizer)
    digest = quantized_digest(lstm)
    plan = storage_plan(lstm)
    names = sorted(n for n, _, _ in latent_weights(lstm))
    assert names == ["layers.0.weight_hh", "layers.0.weight_ih"]
    assert plan.exact == names and plan.lossy == []
    assert plan.record() == {"exact": {"int8_rows": names}, "lossy": {}}
    stored = encode_state(dict(lstm.state_dict()), plan.stored)
    assert stored[STORAGE_KEY] == {"version": 1, "tensors": {n: "int8_rows" for n in names}}
    assert stored_bytes(stored) < stored_bytes(lstm.state_dict()) / 3
    other = _lstm(quantizer)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(decode_state(stored))
    assert quantized_digest(other) == digest
    x = torch.randn(5, 3, 40)
    assert torch.equal(other(x)[0], lstm(x)[0])  # the layer's outputs: bit for bit


def test_plan_keeps_full_precision_unless_a_lossy_encoding_is_asked():
    lstm = _lstm("fp", "none", hidden=128)
    assert storage_plan(lstm).stored == {}
    plan = storage_plan(lstm, "float16")  # W_h: 512 x 128 = 2^16 entries; W_x, bias: fewer
    assert plan.exact == [] and plan.lossy == ["layers.0.weight_hh"]
    assert plan.record() == {"exact": {}, "lossy": {"float16": ["layers.0.weight_hh"]}}
    with pytest.raises(StorageError, match="floats must be one of"):
        storage_plan(lstm, "int4")
    packed = storage_plan(lstm, "int6_rows")
    assert packed.record() == {"exact": {}, "lossy": {"int6_rows": ["layers.0.weight_hh"]}}
    stored = encode_state(dict(lstm.state_dict()), packed.stored)
    w = lstm.state_dict()["layers.0.weight_hh"]
    saved = stored_bytes(lstm.state_dict()) - stored_bytes(stored)
    assert saved == w.numel() * 4 - w.numel() * 6 // 8 - w.shape[0] * 4 - 2 * 8
    assert stored["layers.0.weight_hh"].dim() == 1  # the parts' shapes are not the tensor's
    assert tensor_shape(stored, "layers.0.weight_hh") == tuple(w.shape)
    assert tensor_shape(stored, "layers.0.bias") == (512,)
    assert tensor_shape(stored, "absent") is None
    back = decode_state(stored)["layers.0.weight_hh"]
    assert (back - w).abs().max() <= w.abs().amax(1).max() / 31 / 2 * (1 + 1e-5)


def test_a_state_without_a_record_is_returned_as_it_is():
    state = {"w": torch.ones(2)}
    assert decode_state(state) is state and storage_encodings(state) == {}


def test_damaged_records_are_named():
    lstm = _lstm("bc")
    stored = encode_state(dict(lstm.state_dict()), storage_plan(lstm).stored)
    missing = {k: v for k, v in stored.items() if not k.endswith("weight_hh" + SCALE_SUFFIX)}
    with pytest.raises(StorageError, match=r"lacks layers\.0\.weight_hh@scale"):
        decode_state(missing)
    with pytest.raises(StorageError, match="not version 1"):
        decode_state(dict(stored, **{STORAGE_KEY: {"version": 7, "tensors": {}}}))
    odd = dict(stored, **{STORAGE_KEY: {"version": 1, "tensors": {"layers.0.bias": "int3"}}})
    with pytest.raises(StorageError, match="unknown tensor encoding 'int3'"):
        decode_state(odd)
