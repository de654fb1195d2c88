"""Quantization benchmark on the baby Shakespeare model: val loss and file size of every method,
the per-tensor error report, and the int8 GEMM's throughput against float32 sgemm.

Model: the baby preset (4 layers, 4 heads, 128 channels, block 64, bias=False, 2000 steps), given
as a checkpoint. What is quantized: the 16 linear weights (attn.c_attn, attn.c_proj, mlp.c_fc,
mlp.c_proj of each block, 97.8% of the parameters); wte (also the output layer), wpe and the
LayerNorms stay float32 in every file. W8A8 runs those 16 linears and the output layer (wte^T) in
int8.

Protocol (fixed, so runs compare):
- val loss: the whole val split of tiny Shakespeare (the last 10% of the characters), in
  consecutive windows of 64 tokens, batches of 32 (minigpt eval's protocol), the mean over all
  targets;
- calibration (GPTQ, static int8, SmoothQuant): the first 8 batches of 16 windows of the train
  split (8192 tokens);
- the per-tensor report: the first 8 val batches (16384 targets) per tensor, to keep it short;
- sizes: the bytes of each safetensors file written with minigpt's save_checkpoint, against the
  float32 checkpoint of the same model written the same way;
- k-means: 4 bits (16 shared values per tensor), then its centroids fine-tuned for 200 steps
  (AdamW, lr 1e-4, batch 12) on the train split;
- QAT: the float model fine-tuned 200 steps with fake-quantized w4g32 weights (minigpt train
  --qat w4g32 --init-from, lr 1e-4 constant), then quantized w4g32 round-to-nearest;
- GEMM: int8 x int8 -> int32 (the numba kernel) vs float32 x @ w (NumPy's OpenBLAS sgemm) at the
  model's linear shapes, M = 2048 rows (an eval batch, 32 x 64 tokens), 64 (one sequence) and 1
  (decoding one token); median of `--repeats` timed calls after a warm-up; GOP/s = 2 M K N / t for
  both (an int8 multiply-add counts as 2 ops, as a float one counts as 2 FLOPs). The int8 linear
  end to end (quantize the activations, GEMM, rescale) is timed too.

    flock /tmp/minigpt-heavy.lock python benchmarks/quantize_baby.py \\
        --ckpt ../helpers/teacher_baby.safetensors --data ../shared/data/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.compress import kmeans as KM
from minigpt.compress import quantize as Q
from minigpt.compress.int8 import Int8Linear, Int8Model, calibrate, calibration_batches, int8_inference
from minigpt.data import iter_windows, load_text, split
from minigpt.kernels.int8 import int8_matmul
from minigpt.train import TrainConfig, train

WEIGHT_RUNS = [  # (label, method, spec)
    ("W8 per channel, RTN", "rtn", "w8"),
    ("W8 per channel, GPTQ", "gptq", "w8"),
    ("W4 G32, RTN", "rtn", "w4g32"),
    ("W4 G32, GPTQ", "gptq", "w4g32"),
    ("W4 per channel, RTN", "rtn", "w4"),
    ("W4 per channel, GPTQ", "gptq", "w4"),
    ("W3 G32, RTN", "rtn", "w3g32"),
    ("W3 G32, GPTQ", "gptq", "w3g32"),
    ("W3 per channel, RTN", "rtn", "w3"),
    ("W3 per channel, GPTQ", "gptq", "w3"),
    ("W2 G32, RTN", "rtn", "w2g32-affine"),
    ("W2 G32, GPTQ", "gptq", "w2g32-affine"),
    ("llama.cpp Q8_0", "q8_0", "w8"),
    ("llama.cpp Q4_0", "q4_0", "w4"),
    ("k-means 4 bits", "kmeans", "w4"),
]
INT8_RUNS = [  # (label, mode, SmoothQuant alpha)
    ("W8A8 dynamic per-token", "dynamic", None),
    ("W8A8 static per-tensor", "static", None),
    ("W8A8 static per-tensor + SmoothQuant 0.5", "static", 0.5),
]


def file_bytes(config, params, tok, encoded=None) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        save_checkpoint(path, config, params, tok, encoded=encoded)
        return os.path.getsize(path)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (and the numba compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_bench(config, repeats: int) -> list:
    C, V = config.n_embd, config.vocab_size
    shapes = [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, 4 * C), ("mlp.c_proj", 4 * C, C),
              ("output layer", C, V)]
    rng = np.random.default_rng(0)
    rows = []
    for M in (2048, 64, 1):
        for name, K, N in shapes:
            x = rng.normal(size=(M, K)).astype(np.float32)
            w = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
            xq = rng.integers(-127, 128, (M, K)).astype(np.int8)
            wq = rng.integers(-127, 128, (K, N)).astype(np.int8)
            layer = Int8Linear(w, None, "dynamic")
            t_f = median_seconds(lambda x=x, w=w: x @ w, repeats)
            t_i = median_seconds(lambda xq=xq, wq=wq: int8_matmul(xq, wq), repeats)
            t_l = median_seconds(lambda x=x, layer=layer: layer(x), repeats)
            ops = 2 * M * K * N
            rows.append({"layer": name, "M": M, "K": K, "N": N, "sgemm_gflops": ops / t_f / 1e9,
                         "int8_gemm_gops": ops / t_i / 1e9, "int8_linear_gops": ops / t_l / 1e9,
                         "sgemm_us": t_f * 1e6, "int8_gemm_us": t_i * 1e6, "int8_linear_us": t_l * 1e6})
            r = rows[-1]
            print(f"  M={M:5d} {name:<13} K={K:4d} N={N:4d}: sgemm {r['sgemm_gflops']:7.1f} GFLOP/s, int8 GEMM "
                  f"{r['int8_gemm_gops']:7.1f} GOP/s, int8 linear (with quantize + rescale) "
                  f"{r['int8_linear_gops']:7.1f} GOP/s", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="benchmarks/quantize_baby.json")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per GEMM measurement")
    ap.add_argument("--finetune-iters", type=int, default=200)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    ck = load_checkpoint(args.ckpt)
    config, tok = ck.config, ck.tokenizer
    params = {n: p.astype(np.float32) for n, p in ck.params.items()}
    ids = tok.encode(load_text(args.data))
    train_ids, val_ids = split(ids, config.block_size)
    val = list(iter_windows(val_ids, config.block_size, 32))
    calib = calibration_batches(train_ids, config.block_size, 8, 16)
    result = {"model": config.to_dict(), "ckpt": args.ckpt, "val_targets": int(sum(y.size for _, y in val)),
              "calibration_tokens": int(sum(x.size for x in calib)), "runs": []}

    def record(label, loss, nbytes, **extra):
        row = {"label": label, "val_loss": loss, "delta": loss - result["float_val_loss"], "bytes": nbytes,
               "ratio": nbytes / result["float32_bytes"] if nbytes else None, **extra}
        result["runs"].append(row)
        size = f"{nbytes:>9,} bytes ({row['ratio']:.3f}x)" if nbytes else " " * 27
        print(f"{label:<42} val loss {loss:.4f} ({row['delta']:+.4f})  {size}", flush=True)

    result["float_val_loss"] = Q.eval_loss(config, params, val)
    result["float32_bytes"] = file_bytes(config, params, tok)
    record("float32", result["float_val_loss"], result["float32_bytes"])
    n_linear = sum(params[n].size for n in Q.linear_weight_names(params))
    result["linear_fraction"] = n_linear / sum(p.size for p in params.values())

    for label, method, spec_text in WEIGHT_RUNS:
        spec = Q.parse_spec(spec_text)
        t0 = time.perf_counter()
        qp, enc = Q.quantize_model(config, params, method, spec, calib if method == "gptq" else None)
        seconds = time.perf_counter() - t0
        record(label, Q.eval_loss(config, qp, val), file_bytes(config, qp, tok, enc), seconds=seconds,
               method=method, spec=spec_text)
        if method == "kmeans":
            shared = {n: (KM.kmeans_1d(params[n], 4)[0], e.parts["codebook"]) for n, e in enc.items()}
            ft, books, _ = KM.finetune_centroids(config, qp, shared, train_ids, iters=args.finetune_iters, lr=1e-4)
            enc_ft = {n: Q.storage.encode(ft[n], "kmeans", bits=4, idx=idx, codebook=c) for n, (idx, c) in books.items()}
            bytes_ft = file_bytes(config, ft, tok, enc_ft)
            huff = sum(KM.huffman_nbytes(idx) + c.nbytes for idx, c in books.values())
            packed = sum(e.nbytes() for e in enc_ft.values())
            record(f"k-means 4 bits + {args.finetune_iters} centroid steps", Q.eval_loss(config, ft, val), bytes_ft,
                   method="kmeans", huffman_index_bytes=huff, packed_index_bytes=packed)
            print(f"  k-means indices: packed {packed:,} bytes, Huffman-coded {huff:,} bytes (+ codebooks)")

    with tempfile.TemporaryDirectory() as d:  # QAT: fine-tune with fake-quantized weights, then quantize
        save_checkpoint(Path(d) / "f.safetensors", config, params, tok, ck.meta)
        tc = TrainConfig(out_dir=str(Path(d) / "qat"), data=args.data, init_from=str(Path(d) / "f.safetensors"),
                         max_iters=args.finetune_iters, learning_rate=1e-4, decay_lr=False,
                         eval_interval=args.finetune_iters, eval_iters=20, qat="w4g32")
        train(tc, quiet=True)
        qat = load_checkpoint(Path(d) / "qat" / "resume.safetensors").params  # the last step's weights
        qp, enc = Q.quantize_model(config, qat, "rtn", Q.parse_spec("w4g32"))
        record(f"W4 G32 after {args.finetune_iters} QAT steps, RTN", Q.eval_loss(config, qp, val),
               file_bytes(config, qp, tok, enc), method="qat")

    stats = calibrate(config, params, calib)
    w8, enc8 = Q.quantize_model(config, params, "rtn", Q.parse_spec("w8"))
    for label, mode, alpha in INT8_RUNS:
        model = Int8Model(params, mode, stats, alpha)
        t0 = time.perf_counter()
        with int8_inference(model):
            loss = Q.eval_loss(config, params, val)
        record(label, loss, None, eval_seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    with int8_inference(Int8Model(w8, "dynamic", encoded=enc8)):
        loss = Q.eval_loss(config, w8, val)
    record("W8A8 dynamic on the W8 checkpoint's codes", loss, file_bytes(config, w8, tok, enc8),
           eval_seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    Q.eval_loss(config, params, val)
    result["float_eval_seconds"] = time.perf_counter() - t0

    print("per-tensor report, W3 per channel RTN, first 8 val batches:")
    q3, _ = Q.quantize_model(config, params, "rtn", Q.parse_spec("w3"))
    result["report_w3_rtn"] = Q.report(config, params, q3, val[:8])
    print(Q.format_report(result["report_w3_rtn"]))

    print("GEMM throughput:")
    result["gemm"] = gemm_bench(config, args.repeats)
    result["threads"] = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    result["seconds"] = time.perf_counter() - t_start
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
