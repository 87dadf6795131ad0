"""GPU: the packed Triton kernels against cuBLAS / cuDNN fp16, side by side in one run (ratios).

    python benchmarks/packed_gpu_speed.py [--iters 200] [--sweep] [--compare-with FILE.py]

0. correctness: every product below against the dense fp32 reference (fp32 and fp16
   activations); the run stops on a mismatch;
1. y = x W^T for W of (4d x d), d in {512, 1024, 2000}, batch 1, 8 and 64: packed binary and
   ternary vs dense fp16 ``x @ W.t()`` (cuBLAS). Each product is timed inside a CUDA graph of
   ``--graph-calls`` back-to-back calls (GPU time, no Python launch cost: what a captured step
   loop sees), and eagerly (one Python call after the other, launch cost included);
2. one LSTM step at a time (generation: batch 1, T=1, state carried), d in {512, 1024, 2000}:
   ``nn.LSTM`` fp16 (cuDNN) eager and in a CUDA graph vs the packed LSTM (bc+weight, tc+weight,
   bc+layer) eager and through :class:`nq_plugin.packed.cuda_graph.CUDAGraphLSTM`;
3. a whole-sequence forward (T=100, batch 1 and 8, d=512 / 1024): cuDNN fp16 vs packed
   (bc+weight) eager and graphed.

``--sweep`` also times block-size choices of the two kernels at d=512 and d=2000;
``--compare-with`` adds a column for another kernel module's ``packed_matmul`` (an older
version, say). Times are CUDA-event medians over repeated timings, in microseconds.
"""
import argparse
import importlib.util
import statistics
import sys

import torch


def event_time(fn, iters, repeats=5):
    """Median over ``repeats`` of the mean time of ``iters`` calls, microseconds."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / iters)
    return statistics.median(times)


def eager(fn, iters):
    for _ in range(10):
        fn()
    return event_time(fn, iters)


def graphed(fn, calls, iters):
    """GPU time per call: ``calls`` back-to-back calls recorded in one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return event_time(graph.replay, max(1, iters // calls)) / calls


def load_module(path):
    spec = importlib.util.spec_from_file_location("compare_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.packed_matmul


def random_packed(rows, d, bits, dev):
    from nq_plugin.packed.format import pack_matrix
    if bits == 1:
        codes = (torch.randint(0, 2, (rows, d)) * 2 - 1).float()
    else:
        codes = torch.randint(-1, 2, (rows, d)).float()
    planes = {k: v.to(dev) for k, v in pack_matrix(codes, bits).items()}
    return codes.to(dev), planes


def check(packed_matmul, dev):
    worst = 0.0
    for d in (512, 1000, 2000):
        rows = 4 * d
        scale = torch.rand(rows, device=dev) + 0.5
        for bits in (1, 2):
            codes, planes = random_packed(rows, d, bits, dev)
            dense = codes * scale[:, None]
            for batch in (1, 2, 3, 8, 64):
                for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
                    x = torch.randn(batch, d, device=dev).to(dtype)
                    y = packed_matmul(x, planes, scale, bits, d).float()
                    ref = x.float() @ dense.t()
                    err = ((y - ref).abs().max() / ref.abs().max()).item()
                    worst = max(worst, err) if dtype == torch.float32 else worst
                    if err > tol:
                        sys.exit(f"MISMATCH d={d} bits={bits} batch={batch} {dtype}: "
                                 f"relative error {err:.2e} > {tol}")
    print(f"correctness: every product within tolerance (fp32: max relative error {worst:.1e})")
    from nq_plugin.nn import NQLSTM
    from nq_plugin.packed import PackedNQLSTM
    worst = 0.0
    for quantizer in ("bc", "tc"):
        for norm, stats in (("weight", "shared"), ("batch", "separate"), ("power", "shared"),
                            ("layer", "shared")):
            torch.manual_seed(0)
            m = NQLSTM(300, 650, 2, quantizer=quantizer, norm=norm, bn_stats=stats,
                       bn_max_steps=5)
            with torch.no_grad():
                m(torch.randn(5, 8, 300))  # training-mode statistics
            m.eval()
            packed = PackedNQLSTM.from_lstm(m).to(dev)
            x = torch.randn(9, 3, 300)
            with torch.no_grad():
                ref, (rh, rc) = m(x)
                ref2, _ = m(x[:2], (rh, rc), t0=9)
                out, (h, c) = packed(x.to(dev))
                out2, _ = packed(x[:2].to(dev), (h, c), t0=9)
            err = max((out.cpu() - ref).abs().max().item(), (out2.cpu() - ref2).abs().max().item())
            worst = max(worst, err)
            if err > 1e-5:
                sys.exit(f"MISMATCH packed LSTM on the GPU {quantizer}+{norm}/{stats}: {err:.2e}")
    print(f"correctness: packed LSTM on the GPU (fused step / per-op) = unpacked on the CPU, "
          f"2 layers, 9 + 2 steps, carried state (max abs error {worst:.1e})")


def products(packed_matmul, other, dev, args):
    print("\n## y = x W^T, W (4d x d): GPU time per call inside a CUDA graph "
          f"({args.graph_calls} calls), eager in brackets, microseconds")
    head = "| d | batch | cuBLAS fp16 | packed 1-bit | speed-up | packed 2-bit | speed-up |"
    sep = "|---|---|---|---|---|---|---|"
    if other is not None:
        head += " compared 1-bit | compared 2-bit |"
        sep += "---|---|"
    print(head)
    print(sep)
    for d in (512, 1024, 2000):
        rows = 4 * d
        dense = torch.randn(rows, d, device=dev, dtype=torch.float16)
        scale = torch.rand(rows, device=dev) + 0.5
        _, binary = random_packed(rows, d, 1, dev)
        _, ternary = random_packed(rows, d, 2, dev)
        for batch in (1, 8, 64):
            x = torch.randn(batch, d, device=dev, dtype=torch.float16)
            fns = [lambda: x @ dense.t(),
                   lambda: packed_matmul(x, binary, scale, 1, d),
                   lambda: packed_matmul(x, ternary, scale, 2, d)]
            if other is not None:
                fns += [lambda: other(x, binary, scale, 1, d), lambda: other(x, ternary, scale, 2, d)]
            g = [graphed(f, args.graph_calls, args.iters) for f in fns]
            e = [eager(f, args.iters) for f in fns]
            line = (f"| {d} | {batch} | {g[0]:.2f} ({e[0]:.1f}) | {g[1]:.2f} ({e[1]:.1f}) | "
                    f"{g[0] / g[1]:.2f}x | {g[2]:.2f} ({e[2]:.1f}) | {g[0] / g[2]:.2f}x |")
            if other is not None:
                line += f" {g[3]:.2f} ({e[3]:.1f}) | {g[4]:.2f} ({e[4]:.1f}) |"
            print(line, flush=True)


def sweep(packed_matmul, dev, args):
    print("\n## block-size sweep (GPU time per call in a CUDA graph, microseconds)")
    print("| d | batch | bits | config | time |")
    print("|---|---|---|---|---|")
    gemv = [{"BLOCK_R": r, "BLOCK_W": w, "num_warps": nw}
            for r in (2, 4, 8) for w in (16, 32, 64) for nw in (1, 2)]
    gemm = [{"BLOCK_N": n, "BLOCK_R": r, "BLOCK_W": w, "num_warps": nw}
            for n in (16, 32, 64) for r in (32, 64, 128) for w in (1, 2, 4) for nw in (4,)]
    for d in (512, 2000):
        rows = 4 * d
        scale = torch.rand(rows, device=dev) + 0.5
        for bits in (1, 2):
            _, planes = random_packed(rows, d, bits, dev)
            shapes = ((1, gemv), (8, gemm), (64, gemm)) if args.sweep_gemm else ((1, gemv),)
            for batch, configs in shapes:
                if batch == 8:
                    configs = [c for c in configs if c["BLOCK_N"] <= 16]
                x = torch.randn(batch, d, device=dev, dtype=torch.float16)
                results = []
                for cfg in configs:
                    try:
                        t = graphed(lambda: packed_matmul(x, planes, scale, bits, d, config=cfg),
                                    args.graph_calls, args.iters)
                    except Exception as err:  # out of resources, say
                        print(f"| {d} | {batch} | {bits} | {cfg} | failed: {type(err).__name__} |")
                        continue
                    results.append((t, cfg))
                results.sort(key=lambda r: r[0])
                for t, cfg in results[:4]:
                    print(f"| {d} | {batch} | {bits} | {cfg} | {t:.2f} |", flush=True)


def sweep_step(dev, args, quantizer="bc", blocks_j=(2, 4, 8), blocks_w=(16, 32, 64),
               warps=(1, 2, 4)):
    from nq_plugin.packed.kernels.triton_kernels import packed_lstm_step
    bits = 1 if quantizer == "bc" else 2
    print(f"\n## fused step block sizes (batch 1, {quantizer}+weight, GPU time per step in a CUDA "
          "graph)")
    print("| d | config | time |")
    print("|---|---|---|")
    for d in (512, 2000):
        layer = packed_lstm(d, quantizer, "weight", dev).layers[0]
        w_ih, w_hh = layer.matrix("ih"), layer.matrix("hh")
        ax, ah, shift = (t[0] for t in layer._fused_tables(w_ih, w_hh))
        x = torch.randn(1, d, device=dev, dtype=torch.float16)
        h = torch.zeros(1, d, device=dev, dtype=torch.float16)
        results = []
        for j in blocks_j:
            for w in blocks_w:
                for nw in warps:
                    cfg = {"BLOCK_J": j, "BLOCK_W": w, "num_warps": nw}
                    fn = lambda: packed_lstm_step(x, h, h, (w_ih.planes, bits), (w_hh.planes, bits),
                                                  ax, ah, shift, config=cfg)
                    try:
                        results.append((graphed(fn, args.graph_calls, args.iters), cfg))
                    except Exception as err:
                        print(f"| {d} | {cfg} | failed: {type(err).__name__} |")
        results.sort(key=lambda r: r[0])
        for t, cfg in results[:5]:
            print(f"| {d} | {cfg} | {t:.2f} |", flush=True)


def packed_lstm(d, quantizer, norm, dev):
    from nq_plugin.nn import NQLSTM
    from nq_plugin.packed import PackedNQLSTM
    nq = NQLSTM(d, d, quantizer=quantizer, norm=norm)
    with torch.no_grad():  # a few training-mode batches give layer/batch norm real statistics
        nq(torch.randn(20, 4, d))
    return PackedNQLSTM.from_lstm(nq.eval()).to(dev)


def steps(dev, args):
    from nq_plugin.packed.cuda_graph import CUDAGraphLSTM
    print("\n## one LSTM step (batch 1, T=1, state carried): microseconds per step. 'graph': "
          f"GPU time, {args.graph_calls} steps recorded in one CUDA graph; 'eager': one Python "
          "call per step; 'CUDAGraphLSTM': one Python call per step replaying a recorded step")
    print("| d | cuDNN fp16 eager | cuDNN fp16 graph | model | packed eager | packed graph | "
          "graph vs cuDNN graph | CUDAGraphLSTM per call |")
    print("|---|---|---|---|---|---|---|---|")
    for d in (512, 1024, 2000):
        ref = torch.nn.LSTM(d, d).to(dev).half().eval()
        x = torch.randn(1, 1, d, device=dev, dtype=torch.float16)
        state = [(torch.zeros(1, 1, d, device=dev, dtype=torch.float16),) * 2]

        def ref_step():
            _, state[0] = ref(x, state[0])

        with torch.no_grad():
            t_ref = eager(ref_step, args.iters)
            t_ref_graph = graphed(ref_step, args.graph_calls, args.iters)
        for quantizer, norm in (("bc", "weight"), ("tc", "weight"), ("bc", "batch"),
                                ("bc", "layer")):
            packed = packed_lstm(d, quantizer, norm, dev)
            wrapped = CUDAGraphLSTM(packed)
            pstate = [(torch.zeros(1, 1, d, device=dev, dtype=torch.float16),) * 2]

            def packed_step(module):
                def step():
                    _, pstate[0] = module(x, pstate[0])
                return step

            with torch.no_grad():
                t_eager = eager(packed_step(packed), args.iters)
                t_graph = graphed(packed_step(packed), args.graph_calls, args.iters)
                t_wrapped = eager(packed_step(wrapped), args.iters)
            print(f"| {d} | {t_ref:.1f} | {t_ref_graph:.1f} | {quantizer}+{norm} | {t_eager:.1f} | "
                  f"{t_graph:.1f} | {t_ref_graph / t_graph:.2f}x | {t_wrapped:.1f} |", flush=True)


def sequences(dev, args):
    from nq_plugin.packed.cuda_graph import CUDAGraphLSTM
    print("\n## whole-sequence forward T=100 (bc+weight): microseconds per call")
    print("| d | batch | cuDNN fp16 | packed eager | packed graph | graph vs cuDNN |")
    print("|---|---|---|---|---|---|")
    for d in (512, 1024):
        ref = torch.nn.LSTM(d, d).to(dev).half().eval()
        packed = packed_lstm(d, "bc", "weight", dev)
        graph = CUDAGraphLSTM(packed)
        for batch in (1, 8):
            x = torch.randn(100, batch, d, device=dev, dtype=torch.float16)
            n = max(10, args.iters // 10)
            with torch.no_grad():
                t_ref = eager(lambda: ref(x), n)
                t_packed = eager(lambda: packed(x), n)
                t_graph = eager(lambda: graph(x), n)
            print(f"| {d} | {batch} | {t_ref:.0f} | {t_packed:.0f} | {t_graph:.0f} | "
                  f"{t_ref / t_graph:.2f}x |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--graph-calls", type=int, default=50)
    ap.add_argument("--sweep", action="store_true", help="block sizes: fused step and GEMV")
    ap.add_argument("--sweep-gemm", action="store_true", help="with --sweep: the GEMM too")
    ap.add_argument("--sweep-ternary-step", action="store_true",
                    help="block sizes of the fused step for 2-bit weights")
    ap.add_argument("--compare-with", metavar="FILE")
    ap.add_argument("--only", nargs="*", default=["check", "products", "steps", "sequences"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("packed_gpu_speed.py needs a CUDA GPU (and triton): none found")
    import triton
    from nq_plugin.packed.kernels.triton_kernels import packed_matmul
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    torch.manual_seed(0)
    other = load_module(args.compare_with) if args.compare_with else None
    if "check" in args.only:
        check(packed_matmul, dev)
    if "products" in args.only:
        products(packed_matmul, other, dev, args)
    if "steps" in args.only:
        steps(dev, args)
    if "sequences" in args.only:
        sequences(dev, args)
    if args.sweep_ternary_step:
        sweep_step(dev, args, "tc", (2, 4), (8, 16, 32), (1, 2))
    if args.sweep:
        sweep_step(dev, args)
        sweep(packed_matmul, dev, args)


if __name__ == "__main__":
    main()
