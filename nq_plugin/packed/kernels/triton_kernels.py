"""Triton kernel: y = x (diag(s) B)^T straight from packed words (1 or 2 bits per weight).

One program computes a BLOCK_N x BLOCK_R tile of y: for each int32 word column it expands the
32 bits of BLOCK_R rows into codes (+-1, or {-1, 0, +1} from the nonzero/negative planes), loads
the matching 32 inputs of BLOCK_N rows of x (zero beyond n: padding bits never count), and
accumulates in fp32; the per-row scale is applied once at the end. Batch 1 (GEMV) and small
batches (GEMM, BLOCK_N up to 8); fp32 or fp16 activations, fp32 accumulation.

Tested on CPU with TRITON_INTERPRET=1 (the environment variable must be set before this module
is imported). The interpreter computes bf16 wrongly, so tests cover fp32 and fp16.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _packed_matmul_kernel(x_ptr, plane0_ptr, plane1_ptr, scale_ptr, y_ptr, N, R, K, WORDS,
                          stride_xn, stride_wr, stride_yn,
                          TERNARY: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    bits = tl.arange(0, 32)
    row_ok = rows < R
    acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    for w in range(0, WORDS):
        words0 = tl.load(plane0_ptr + rows * stride_wr + w, mask=row_ok, other=0)
        b0 = ((words0[:, None] >> bits[None, :]) & 1).to(tl.float32)
        if TERNARY:
            words1 = tl.load(plane1_ptr + rows * stride_wr + w, mask=row_ok, other=0)
            b1 = ((words1[:, None] >> bits[None, :]) & 1).to(tl.float32)
            codes = b0 * (1.0 - 2.0 * b1)  # nonzero * (1 - 2 negative)
        else:
            codes = 2.0 * b0 - 1.0
        cols = w * 32 + bits
        x = tl.load(x_ptr + ns[:, None] * stride_xn + cols[None, :],
                    mask=(ns[:, None] < N) & (cols[None, :] < K), other=0.0).to(tl.float32)
        acc += tl.sum(x[:, None, :] * codes[None, :, :], axis=2)
    scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
    acc = acc * scale[None, :]
    tl.store(y_ptr + ns[:, None] * stride_yn + rows[None, :], acc,
             mask=(ns[:, None] < N) & row_ok[None, :])


def packed_matmul(x: torch.Tensor, planes, scale: torch.Tensor, bits: int, columns: int,
                  block_r: int = 32) -> torch.Tensor:
    """x (N, n) -> (N, R), computing from the packed planes."""
    if x.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"packed_matmul supports fp32/fp16 activations, got {x.dtype}")
    x = x.contiguous()
    if bits == 1:
        p0 = p1 = planes["plus"]
    elif bits == 2:
        p0, p1 = planes["nonzero"], planes["negative"]
    else:
        raise ValueError(f"packed_matmul: bits must be 1 or 2, got {bits}")
    rows, words = p0.shape
    n = x.shape[0]
    y = torch.empty(n, rows, dtype=x.dtype, device=x.device)
    block_n = 1
    while block_n < min(n, 8):
        block_n *= 2
    grid = (triton.cdiv(rows, block_r), triton.cdiv(n, block_n))
    _packed_matmul_kernel[grid](x, p0.contiguous(), p1.contiguous(), scale.float().contiguous(),
                                y, n, rows, columns, words, x.stride(0), p0.stride(0),
                                y.stride(0), TERNARY=bits == 2, BLOCK_N=block_n, BLOCK_R=block_r)
    return y
