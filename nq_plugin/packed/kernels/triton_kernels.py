"""Triton kernels: y = x (diag(s) B)^T straight from packed words (1 or 2 bits per weight).

Both kernels read a (BLOCK_R x BLOCK_W) tile of int32 words at a time, expand its
BLOCK_W * 32 bits per row into codes (+-1, or {-1, 0, +1} = nonzero * (1 - 2 negative) from the
two planes of the 2-bit format), multiply them with the matching BLOCK_W * 32 inputs of x (zero
beyond n, so padding bits never count), accumulate in fp32 and apply the per-row scale once at
the end:

* ``_packed_gemv_kernel`` (1 to 4 rows of x: generation, streaming scoring): a multiply and a
  sum over the expanded tile on the CUDA cores. Many small programs (BLOCK_R rows each) so that
  even H = 512 (2048 rows) fills every multiprocessor; the binary W_h of H = 2000 is 2 MB,
  16x fewer bytes than the fp16 matrix cuBLAS reads.
* ``_packed_gemm_kernel`` (more rows): the expanded codes go through ``tl.dot`` -- tensor cores
  for fp16 activations (codes are exact in fp16), IEEE fp32 for fp32 ones.

fp32 or fp16 activations, fp32 accumulation. Tested on CPU with TRITON_INTERPRET=1 (the
environment variable must be set before this module is imported; the interpreter computes bf16
wrongly, so tests cover fp32 and fp16), and against cuBLAS on a GPU by
``benchmarks/packed_gpu_speed.py``.
"""
import torch
import triton
import triton.language as tl

from ..format import word_planes


@triton.jit
def _codes(plane0_ptr, plane1_ptr, rows, row_ok, w0, stride_wr, WORDS,
           TERNARY: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr,
           DTYPE: tl.constexpr):
    """Codes of the words w0 .. w0 + BLOCK_W of ``rows``: (BLOCK_R, BLOCK_W * 32)."""
    ws = w0 + tl.arange(0, BLOCK_W)
    ok = row_ok[:, None] & (ws[None, :] < WORDS)
    offsets = rows[:, None] * stride_wr + ws[None, :]
    bits = tl.arange(0, 32)
    words0 = tl.load(plane0_ptr + offsets, mask=ok, other=0)
    b0 = ((words0[:, :, None] >> bits[None, None, :]) & 1).to(DTYPE)
    if TERNARY:
        words1 = tl.load(plane1_ptr + offsets, mask=ok, other=0)
        b1 = ((words1[:, :, None] >> bits[None, None, :]) & 1).to(DTYPE)
        codes = b0 - 2 * b0 * b1  # nonzero * (1 - 2 negative)
    else:
        codes = 2 * b0 - 1
    return tl.reshape(codes, (BLOCK_R, BLOCK_W * 32))


@triton.jit
def _row_dots(x_ptr, plane0_ptr, plane1_ptr, rows, row_ok, stride_wr, K, WORDS,
              TERNARY: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """(B x)_r for ``rows`` and one row of x: (BLOCK_R,) fp32. Each bit selects +x or -x
    (binary), or +x / -x / 0 (ternary); the products are summed elementwise over the word
    chunks and reduced across the chunk once at the end."""
    bits = tl.arange(0, 32)
    acc = tl.zeros((BLOCK_R, BLOCK_W * 32), dtype=tl.float32)
    for w0 in range(0, WORDS, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        ok = row_ok[:, None] & (ws[None, :] < WORDS)
        offsets = rows[:, None] * stride_wr + ws[None, :]
        cols = w0 * 32 + tl.arange(0, BLOCK_W * 32)
        x = tl.load(x_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)[None, :]
        words0 = tl.load(plane0_ptr + offsets, mask=ok, other=0)
        set0 = tl.reshape((words0[:, :, None] >> bits[None, None, :]) & 1,
                          (BLOCK_R, BLOCK_W * 32)) != 0
        if TERNARY:
            words1 = tl.load(plane1_ptr + offsets, mask=ok, other=0)
            set1 = tl.reshape((words1[:, :, None] >> bits[None, None, :]) & 1,
                              (BLOCK_R, BLOCK_W * 32)) != 0
            acc += tl.where(set0, tl.where(set1, -x, x), 0.0)
        else:
            acc += tl.where(set0, x, -x)
    return tl.sum(acc, axis=1)


@triton.jit
def _packed_gemv_kernel(x_ptr, plane0_ptr, plane1_ptr, scale_ptr, y_ptr, N, R, K, WORDS,
                        stride_xn, stride_wr, stride_yn,
                        TERNARY: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    n = tl.program_id(1)
    row_ok = rows < R
    acc = _row_dots(x_ptr + n * stride_xn, plane0_ptr, plane1_ptr, rows, row_ok, stride_wr, K,
                    WORDS, TERNARY, BLOCK_R, BLOCK_W)
    scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
    tl.store(y_ptr + n * stride_yn + rows, (acc * scale).to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _gate(gate, x_row, h_row, ih0_ptr, ih1_ptr, hh0_ptr, hh1_ptr, ax_ptr, ah_ptr, shift_ptr,
          js, ok, H, K, WORDS_X, WORDS_H, stride_ih, stride_hh, TERNARY_X: tl.constexpr,
          TERNARY_H: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_W: tl.constexpr):
    """Pre-activation of gate ``gate`` (0..3) for hidden units js."""
    rows = gate * H + js
    gx = _row_dots(x_row, ih0_ptr, ih1_ptr, rows, ok, stride_ih, K, WORDS_X, TERNARY_X, BLOCK_J,
                   BLOCK_W)
    gh = _row_dots(h_row, hh0_ptr, hh1_ptr, rows, ok, stride_hh, H, WORDS_H, TERNARY_H, BLOCK_J,
                   BLOCK_W)
    ax = tl.load(ax_ptr + rows, mask=ok, other=0.0)
    ah = tl.load(ah_ptr + rows, mask=ok, other=0.0)
    shift = tl.load(shift_ptr + rows, mask=ok, other=0.0)
    return ax * gx + ah * gh + shift


@triton.jit
def _packed_lstm_step_kernel(x_ptr, h_ptr, c_ptr, ih0_ptr, ih1_ptr, hh0_ptr, hh1_ptr,
                             ax_ptr, ah_ptr, shift_ptr, h_out_ptr, c_out_ptr,
                             H, K, WORDS_X, WORDS_H, stride_xn, stride_hn, stride_cn,
                             stride_ih, stride_hh, stride_on,
                             TERNARY_X: tl.constexpr, TERNARY_H: tl.constexpr,
                             BLOCK_J: tl.constexpr, BLOCK_W: tl.constexpr):
    """One whole LSTM step for one row of the batch and BLOCK_J hidden units j:
    g = ax * (B_x x) + ah * (B_h h) + shift for the rows j, H + j, 2H + j, 3H + j (gates i, f,
    g, o), then c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c')."""
    js = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    n = tl.program_id(1)
    ok = js < H
    x_row = x_ptr + n * stride_xn
    h_row = h_ptr + n * stride_hn
    i = tl.sigmoid(_gate(0, x_row, h_row, ih0_ptr, ih1_ptr, hh0_ptr, hh1_ptr, ax_ptr, ah_ptr,
                         shift_ptr, js, ok, H, K, WORDS_X, WORDS_H, stride_ih, stride_hh,
                         TERNARY_X, TERNARY_H, BLOCK_J, BLOCK_W))
    f = tl.sigmoid(_gate(1, x_row, h_row, ih0_ptr, ih1_ptr, hh0_ptr, hh1_ptr, ax_ptr, ah_ptr,
                         shift_ptr, js, ok, H, K, WORDS_X, WORDS_H, stride_ih, stride_hh,
                         TERNARY_X, TERNARY_H, BLOCK_J, BLOCK_W))
    a = 2 * tl.sigmoid(2 * _gate(2, x_row, h_row, ih0_ptr, ih1_ptr, hh0_ptr, hh1_ptr, ax_ptr,
                                 ah_ptr, shift_ptr, js, ok, H, K, WORDS_X, WORDS_H, stride_ih,
                                 stride_hh, TERNARY_X, TERNARY_H, BLOCK_J, BLOCK_W)) - 1  # tanh
    o = tl.sigmoid(_gate(3, x_row, h_row, ih0_ptr, ih1_ptr, hh0_ptr, hh1_ptr, ax_ptr, ah_ptr,
                         shift_ptr, js, ok, H, K, WORDS_X, WORDS_H, stride_ih, stride_hh,
                         TERNARY_X, TERNARY_H, BLOCK_J, BLOCK_W))
    c = f * tl.load(c_ptr + n * stride_cn + js, mask=ok, other=0.0).to(tl.float32) + i * a
    h = o * (2 * tl.sigmoid(2 * c) - 1)
    tl.store(c_out_ptr + n * stride_on + js, c.to(c_out_ptr.dtype.element_ty), mask=ok)
    tl.store(h_out_ptr + n * stride_on + js, h.to(h_out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _packed_gemm_kernel(x_ptr, plane0_ptr, plane1_ptr, scale_ptr, y_ptr, N, R, K, WORDS,
                        stride_xn, stride_wr, stride_yn,
                        TERNARY: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_W: tl.constexpr, FP16: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < R
    acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    for w0 in range(0, WORDS, BLOCK_W):
        cols = w0 * 32 + tl.arange(0, BLOCK_W * 32)
        x = tl.load(x_ptr + ns[:, None] * stride_xn + cols[None, :],
                    mask=(ns[:, None] < N) & (cols[None, :] < K), other=0.0)
        if FP16:
            codes = _codes(plane0_ptr, plane1_ptr, rows, row_ok, w0, stride_wr, WORDS,
                           TERNARY, BLOCK_R, BLOCK_W, tl.float16)
            acc += tl.dot(x.to(tl.float16), tl.trans(codes))
        else:
            codes = _codes(plane0_ptr, plane1_ptr, rows, row_ok, w0, stride_wr, WORDS,
                           TERNARY, BLOCK_R, BLOCK_W, tl.float32)
            acc += tl.dot(x.to(tl.float32), tl.trans(codes), input_precision="ieee")
    scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
    acc = acc * scale[None, :]
    tl.store(y_ptr + ns[:, None] * stride_yn + rows[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(ns[:, None] < N) & row_ok[None, :])


GEMV_MAX_ROWS = 4  # products of at most this many rows of x take the GEMV kernel


def default_config(n: int, rows: int, words: int, bits: int = 1) -> dict:
    """Block sizes for a product of ``n`` rows of x with a (rows x 32 * words) packed matrix
    (the fastest of the sweep of benchmarks/packed_gpu_speed.py on an H100, 2026-11-23)."""
    large = rows > 4096
    if n <= GEMV_MAX_ROWS:
        if bits == 1:
            return {"BLOCK_R": 8 if large else 4, "BLOCK_W": 16, "num_warps": 1}
        return {"BLOCK_R": 4 if large else 2, "BLOCK_W": 16, "num_warps": 2 if large else 1}
    if n <= 16:
        return {"BLOCK_N": 16, "BLOCK_R": 64 if large else 32, "BLOCK_W": 4, "num_warps": 4}
    return {"BLOCK_N": 64 if large else 32, "BLOCK_R": 64 if large else 32, "BLOCK_W": 4,
            "num_warps": 4}


def step_config(hidden: int, ternary: bool) -> dict:
    """Block sizes of the fused step (same sweep): two hidden units per program; 2-bit words
    (two planes) take shorter word chunks."""
    if ternary:
        return ({"BLOCK_J": 2, "BLOCK_W": 16, "num_warps": 2} if hidden <= 1024 else
                {"BLOCK_J": 2, "BLOCK_W": 32, "num_warps": 1})
    return {"BLOCK_J": 2, "BLOCK_W": 16 if hidden <= 1024 else 64, "num_warps": 1}


def packed_matmul(x: torch.Tensor, planes, scale: torch.Tensor, bits: int, columns: int,
                  config: dict = None) -> torch.Tensor:
    """x (N, n) -> (N, R), computing from the packed planes. ``config`` overrides the block
    sizes of :func:`default_config` (benchmark sweeps)."""
    if x.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"packed_matmul supports fp32/fp16 activations, got {x.dtype}")
    x = x.contiguous()
    p0, p1 = _planes(planes, bits)
    rows, words = p0.shape
    n = x.shape[0]
    y = torch.empty(n, rows, dtype=x.dtype, device=x.device)
    if scale.dtype != torch.float32:
        scale = scale.float()
    cfg = dict(default_config(n, rows, words, bits), **(config or {}))
    num_warps = cfg.pop("num_warps")
    args = (x, p0, p1, scale.contiguous(), y, n, rows, columns, words, x.stride(0),
            p0.stride(0), y.stride(0))
    if n <= GEMV_MAX_ROWS:
        grid = (triton.cdiv(rows, cfg["BLOCK_R"]), n)
        _packed_gemv_kernel[grid](*args, TERNARY=bits == 2, BLOCK_R=cfg["BLOCK_R"],
                                  BLOCK_W=cfg["BLOCK_W"], num_warps=num_warps)
    else:
        grid = (triton.cdiv(rows, cfg["BLOCK_R"]), triton.cdiv(n, cfg["BLOCK_N"]))
        _packed_gemm_kernel[grid](*args, TERNARY=bits == 2, BLOCK_N=cfg["BLOCK_N"],
                                  BLOCK_R=cfg["BLOCK_R"], BLOCK_W=cfg["BLOCK_W"],
                                  FP16=x.dtype == torch.float16, num_warps=num_warps)
    return y


def _planes(planes, bits):
    """Both word-plane pointers of the kernels (1 bit: the plus plane twice, never read as the
    second)."""
    first, negative = word_planes(planes, bits)
    return first, first if negative is None else negative


def packed_lstm_step(x, h, c, ih, hh, ax, ah, shift, h_out=None, config: dict = None):
    """One fused LSTM step from packed words: x (B, K), h and c (B, H); ``ih`` / ``hh`` are
    (planes, bits) of W_x (4H x K) and W_h (4H x H); ``ax``, ``ah``, ``shift`` (4H,) fp32 fold
    the per-row weight scales, the normalization's per-feature affine map and the bias:
    gates = ax * (B_x x) + ah * (B_h h) + shift. Returns the new (h, c) in x's dtype; ``h_out``
    (B, H, contiguous rows), when given, receives h (a step of the output sequence)."""
    batch, hidden = h.shape
    cfg = dict(step_config(hidden, ih[1] == 2 or hh[1] == 2), **(config or {}))
    x, h, c = x.contiguous(), h.contiguous(), c.contiguous()
    (ih0, ih1), (hh0, hh1) = _planes(*ih), _planes(*hh)
    if h_out is None:
        h_out = torch.empty(batch, hidden, dtype=x.dtype, device=x.device)
    c_out = torch.empty(batch, hidden, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(hidden, cfg["BLOCK_J"]), batch)
    _packed_lstm_step_kernel[grid](
        x, h, c, ih0, ih1, hh0, hh1, ax, ah, shift, h_out, c_out, hidden, x.shape[1],
        ih0.shape[1], hh0.shape[1], x.stride(0), h.stride(0), c.stride(0), ih0.stride(0),
        hh0.stride(0), h_out.stride(0), TERNARY_X=ih[1] == 2, TERNARY_H=hh[1] == 2,
        BLOCK_J=cfg["BLOCK_J"], BLOCK_W=cfg["BLOCK_W"], num_warps=cfg["num_warps"])
    return h_out, c_out
