"""The packed format: bit order, padding, planes, round trips."""
import pytest
import torch

from nq_plugin.packed.format import (PackedFormatError, num_words, pack_bits, pack_matrix,
                                     split_codes, unpack_bits, unpack_matrix)


def test_bit_order_lsb_first_and_padding():
    bits = torch.zeros(2, 40, dtype=torch.bool)
    bits[0, 0] = True     # word 0, bit 0
    bits[0, 31] = True    # word 0, bit 31 (sign bit of the int32)
    bits[1, 33] = True    # word 1, bit 1
    words = pack_bits(bits)
    assert words.dtype == torch.int32 and words.shape == (2, num_words(40)) == (2, 2)
    assert words[0, 0].item() == 1 - 2 ** 31 and words[0, 1].item() == 0
    assert words[1, 0].item() == 0 and words[1, 1].item() == 2  # padding bits are 0
    assert torch.equal(unpack_bits(words, 40), bits)


@pytest.mark.parametrize("cols", [1, 31, 32, 33, 100])
def test_round_trip_random(cols):
    torch.manual_seed(cols)
    binary = torch.randint(0, 2, (7, cols)).float() * 2 - 1
    assert torch.equal(unpack_matrix(pack_matrix(binary, 1), 1, cols), binary)
    ternary = torch.randint(-1, 2, (7, cols)).float()
    assert torch.equal(unpack_matrix(pack_matrix(ternary, 2), 2, cols), ternary)


def test_split_codes_checks_quantized_rows():
    codes, mag = split_codes(torch.tensor([[0.5, -0.5], [2.0, 2.0]]), 1)
    assert torch.equal(codes, torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
    assert torch.equal(mag, torch.tensor([0.5, 2.0]))
    with pytest.raises(PackedFormatError, match="share one magnitude"):
        split_codes(torch.tensor([[0.5, -0.4]]), 1)
    with pytest.raises(PackedFormatError, match="holds zeros"):
        split_codes(torch.tensor([[0.5, 0.0]]), 1)
    codes, _ = split_codes(torch.tensor([[0.3, 0.0, -0.3]]), 2)
    assert torch.equal(codes, torch.tensor([[1.0, 0.0, -1.0]]))
