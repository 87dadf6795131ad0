"""GPU: the packed Triton kernel against cuBLAS fp16, side by side (ratios), ready to run where a
GPU and triton are present (not measured yet: the development machines have no GPU).

    python benchmarks/packed_gpu_speed.py [--iters 200]

1. y = x W^T for W of (4d x d), d in {512, 1024, 2000}, batch 1 (GEMV) and 8 (GEMM): packed
   binary and ternary (Triton, fp16 activations) vs dense fp16 torch.matmul (cuBLAS);
2. a whole-sequence LSTM forward (T=100, batch 1 and 8, d=512 / 1024): PackedNQLSTM (binary,
   weight norm, per-step Triton GEMV) vs torch.nn.LSTM fp16 (cuDNN).
Times with CUDA events after warm-up; prints microseconds and the speed ratio (>1: packed
faster).
"""
import argparse
import sys

import torch


def timed(fn, iters):
    for _ in range(10):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / iters  # microseconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("packed_gpu_speed.py needs a CUDA GPU (and triton): none found")
    from nq_plugin.nn import NQLSTM
    from nq_plugin.packed import PackedNQLSTM
    from nq_plugin.packed.format import pack_matrix
    from nq_plugin.packed.kernels.triton_kernels import packed_matmul

    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__}")
    print("| op | d | batch | cuBLAS fp16 (us) | packed 1-bit (us) | ratio | packed 2-bit (us) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for d in (512, 1024, 2000):
        rows = 4 * d
        dense = torch.randn(rows, d, device=dev, dtype=torch.float16)
        scale = torch.rand(rows, device=dev) + 0.5
        binary = {k: v.to(dev) for k, v in pack_matrix(
            (torch.randint(0, 2, (rows, d)) * 2 - 1).float(), 1).items()}
        ternary = {k: v.to(dev) for k, v in pack_matrix(
            torch.randint(-1, 2, (rows, d)).float(), 2).items()}
        for batch in (1, 8):
            x = torch.randn(batch, d, device=dev, dtype=torch.float16)
            t_dense = timed(lambda: x @ dense.t(), args.iters)
            t_bin = timed(lambda: packed_matmul(x, binary, scale, 1, d), args.iters)
            t_ter = timed(lambda: packed_matmul(x, ternary, scale, 2, d), args.iters)
            print(f"| W x | {d} | {batch} | {t_dense:.1f} | {t_bin:.1f} | {t_dense / t_bin:.2f}x "
                  f"| {t_ter:.1f} | {t_dense / t_ter:.2f}x |")
    print("\n| LSTM forward T=100 | d | batch | cuDNN fp16 (us) | packed 1-bit (us) | ratio |")
    print("|---|---|---|---|---|---|")
    for d in (512, 1024):
        ref = torch.nn.LSTM(d, d).to(dev).half()
        nq = NQLSTM(d, d, quantizer="bc", norm="weight").eval()
        packed = PackedNQLSTM.from_lstm(nq).to(dev)  # on CUDA: per-step Triton GEMV
        for batch in (1, 8):
            x = torch.randn(100, batch, d, device=dev)
            with torch.no_grad():
                t_ref = timed(lambda: ref(x.half()), max(10, args.iters // 10))
                t_packed = timed(lambda: packed(x.half()), max(10, args.iters // 10))
            print(f"| LSTM | {d} | {batch} | {t_ref:.0f} | {t_packed:.0f} | {t_ref / t_packed:.2f}x |")


if __name__ == "__main__":
    main()
