"""Model size, counted exactly as Hou et al. (NeurIPS 2019, Tables 1-4) count it.

Per LSTM layer (KB = 1024 bytes):

    KB = [bits_x #W_x + bits_h #W_h + 32 (4H bias + norm parameters + norm statistics)] / 8 / 1024

with bits = 32 (fp), 1 (binary) or 2 (ternary) as declared by each quantizer, and the norm
parameter / statistic counts declared by each normalization (weight 8H, layer 16H, batch shared
32H, batch separate 16H + 16H T_max per layer). The paper's size is the sum over LSTM layers;
embeddings and the softmax are reported separately (whole-model size) at their storage width.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from torch import nn

from .nn.lstm import NQLSTMLayer

KB = 8 * 1024  # bits per KB


def layer_size(layer: NQLSTMLayer) -> Dict[str, object]:
    """Size accounting of one LSTM layer, from what its quantizers and norms declare."""
    n_ih, n_hh = layer.weight_ih.numel(), layer.weight_hh.numel()
    bits_ih, bits_hh = layer.ih_quantizer.bits, layer.hh_quantizer.bits
    norm_params = layer.ih_norm.counted_parameters() + layer.hh_norm.counted_parameters()
    norm_stats = layer.ih_norm.counted_statistics() + layer.hh_norm.counted_statistics()
    fp_numbers = layer.bias.numel() + norm_params + norm_stats
    bits = bits_ih * n_ih + bits_hh * n_hh + 32 * fp_numbers
    fp32_bits = 32 * (n_ih + n_hh + fp_numbers)
    by_width: Dict[int, int] = {}
    for width, count in ((bits_ih, n_ih), (bits_hh, n_hh), (32, fp_numbers)):
        by_width[width] = by_width.get(width, 0) + count
    return {
        "quantizer": layer.quantizer_name,
        "norm": layer.norm_name,
        "input_size": layer.input_size,
        "hidden_size": layer.hidden_size,
        "weights_ih": n_ih, "bits_ih": bits_ih,
        "weights_hh": n_hh, "bits_hh": bits_hh,
        "bias": layer.bias.numel(),
        "norm_parameters": norm_params,
        "norm_statistics": norm_stats,
        "counts_by_bits": {str(k): v for k, v in sorted(by_width.items())},
        "kb": bits / KB,
        "fp32_kb": fp32_bits / KB,
        "compression": fp32_bits / bits,
    }


def summary(model: nn.Module, print_fn: Optional[Callable[[str], None]] = print
            ) -> Dict[str, object]:
    """Size of every NQLSTM layer as the paper counts it, plus the whole model.

    Returns a dict with ``layers`` (per LSTM layer), ``lstm_kb`` (the paper's number),
    ``lstm_fp32_kb``, ``compression``, ``other`` (parameters outside the LSTM layers, e.g.
    embeddings and softmax, at their storage width) and ``total_kb``. Prints a table unless
    ``print_fn`` is None.
    """
    layers: List[Dict[str, object]] = []
    inside = set()
    for name, module in model.named_modules():
        if isinstance(module, NQLSTMLayer):
            row = layer_size(module)
            row["name"] = name or "lstm"
            layers.append(row)
            inside.update(id(p) for p in module.parameters())
    other = []
    for name, p in model.named_parameters():
        if id(p) not in inside:
            other.append({"name": name, "parameters": p.numel(),
                          "kb": p.numel() * p.element_size() / 1024})
    lstm_kb = sum(r["kb"] for r in layers)
    lstm_fp32_kb = sum(r["fp32_kb"] for r in layers)
    other_kb = sum(r["kb"] for r in other)
    result = {
        "layers": layers,
        "lstm_kb": lstm_kb,
        "lstm_fp32_kb": lstm_fp32_kb,
        "compression": lstm_fp32_kb / lstm_kb if lstm_kb else 1.0,
        "other": other,
        "other_kb": other_kb,
        "total_kb": lstm_kb + other_kb,
        "total_fp32_kb": lstm_fp32_kb + other_kb,
    }
    if print_fn is not None:
        print_fn(format_summary(result))
    return result


def format_summary(result: Dict[str, object]) -> str:
    """Larq-style table of a :func:`summary` result."""
    width = max([22] + [len(r["name"]) + 2 for r in result["layers"] + result["other"]])
    head = (f"{'Layer':<{width}}{'Quant':>6}{'Norm':>8}{'1-bit':>10}{'2-bit':>10}{'32-bit':>11}"
            f"{'KB':>11}{'fp32 KB':>11}{'ratio':>8}")
    rule = "-" * len(head)
    lines = [rule, head, rule]
    for r in result["layers"]:
        c = r["counts_by_bits"]
        lines.append(f"{r['name']:<{width}}{r['quantizer']:>6}{r['norm']:>8}{c.get('1', 0):>10}"
                     f"{c.get('2', 0):>10}{c.get('32', 0):>11}{r['kb']:>11.1f}"
                     f"{r['fp32_kb']:>11.1f}{r['compression']:>7.1f}x")
    for r in result["other"]:
        lines.append(f"{r['name']:<{width}}{'':>6}{'':>8}{'':>10}{'':>10}{r['parameters']:>11}"
                     f"{r['kb']:>11.1f}{r['kb']:>11.1f}{1.0:>7.1f}x")
    lines.append(rule)
    lines.append(f"LSTM layers (the paper's size): {result['lstm_kb']:.1f} KB "
                 f"(fp32 {result['lstm_fp32_kb']:.1f} KB, {result['compression']:.1f}x smaller)")
    lines.append(f"Whole model: {result['total_kb']:.1f} KB (fp32 {result['total_fp32_kb']:.1f} KB)")
    lines.append(rule)
    return "\n".join(lines)
