"""Pruning benchmark on the baby Shakespeare model (preset baby: 4 layers, 4 heads, 128 channels,
2000 steps; val loss 1.8919 on its 20-batch estimate), given as a checkpoint.

1. Val loss against sparsity 0.1 ... 0.9 for random, magnitude per tensor, magnitude global and
   Wanda, and for 2:4 (50%), each one-shot without fine-tuning; after 200 fine-tuning steps
   (masks kept, lr 3e-4 cosine to 3e-5, batch 12) at sparsities 0.3, 0.5, 0.7 and 0.9 and for
   2:4 (fine-tuning every point would take 36 runs on a shared 2-core machine). Plus gradual
   pruning to 50% during 200 steps from the dense model (cubic schedule, masks every 10 steps),
   the same budget as one-shot + 200 steps. And the dense model given the same 200 steps: the
   teacher is not fully converged, so a fine-tuned pruned model is compared with it too.
2. Checkpoint bytes: dense, magnitude 50% (bitmask codec) and 2:4 (nm codec).
3. Structured: 25% of the heads (1 of 4 per layer) and 25% of the MLP neurons removed by norm:
   ms per training step and sampled tokens/s (KV cache, 200 tokens), each the median of
   alternating repeated runs against the dense model (as minigpt bench), and the val loss
   before and after 200 fine-tuning steps.

Evaluation protocol: the loss over 256 windows of 65 tokens evenly spaced over the val split
(16,384 predictions; minigpt.compress.prune_command.eval_windows). Wanda calibrates on 32 random
windows of the train split (seed 0). Writes one JSON file (--out), which
tutorials/05_pruning.py plots.

    OPENBLAS_NUM_THREADS=1 flock /tmp/minigpt-heavy.lock python benchmarks/prune_baby.py \\
        --teacher ../helpers/teacher_baby.safetensors --data ../shared/data/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minigpt.bench import minigpt_stepper, time_alternating
from minigpt.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from minigpt.compress import prune, structured
from minigpt.compress.prune_command import eval_windows, finetune, windows_loss
from minigpt.data import load_text, split
from minigpt.generate import generate
from minigpt.train import RESUME_NAME, TrainConfig, train

SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
FINETUNE_AT = [0.3, 0.5, 0.7, 0.9]
METHODS = {
    "random": ("random", "tensor"),
    "magnitude": ("magnitude", "tensor"),
    "magnitude-global": ("magnitude", "global"),
    "wanda": ("wanda", "tensor"),
}


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    ap.add_argument("--finetune-iters", type=int, default=200)
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    t_start = time.time()

    ck = load_checkpoint(args.teacher)
    config, dense = ck.config, ck.params
    ids = ck.tokenizer.encode(load_text(args.data))
    train_ids, val_ids = split(ids, config.block_size)
    windows = eval_windows(val_ids, config.block_size, 256)
    calib = prune.calibration_batch(train_ids, config.block_size, 32, seed=0)
    names = prune.prunable_names(config)
    meta = dict(ck.meta)
    result = {
        "teacher": args.teacher,
        "eval": "256 val windows of 65 tokens, evenly spaced",
        "calibration": "32 train windows, seed 0",
        "finetune": {
            "iters": args.finetune_iters,
            "lr": args.finetune_lr,
            "schedule": "cosine to lr/10, no warmup",
            "batch_size": 12,
        },
    }
    result["dense_loss"] = windows_loss(config, dense, windows)
    # the fair reference for fine-tuned points: the dense model given the same 200 steps (the
    # teacher is not fully converged, so extra steps alone lower its loss)
    result["dense_loss_finetuned"] = windows_loss(
        config, finetune(args.teacher, args.data, args.finetune_iters, args.finetune_lr), windows
    )
    say(f"dense: {result['dense_loss']:.4f}, after the same fine-tuning {result['dense_loss_finetuned']:.4f}")
    tmp = Path(tempfile.mkdtemp())

    def pruned(method, scope, s, n=2, m=4):
        params = {k: v.copy() for k, v in dense.items()}
        kind = "nm" if method == "nm" else method
        prune.prune_params(config, params, kind, s, names, scope, n, m, calib, seed=0)
        return params

    def tuned(params, info):
        path = tmp / "p.safetensors"
        save_checkpoint(path, config, params, ck.tokenizer, dict(meta, pruning=dict(info, tensors=names)))
        return finetune(path, args.data, args.finetune_iters, args.finetune_lr)

    curves = {}
    for label, (method, scope) in METHODS.items():
        rows = []
        for s in SPARSITIES:
            params = pruned(method, scope, s)
            row = {"sparsity": s, "loss": windows_loss(config, params, windows)}
            if s in FINETUNE_AT:
                row["loss_finetuned"] = windows_loss(config, tuned(params, {"method": label}), windows)
            rows.append(row)
            say(f"{label} {s}: {row}")
        curves[label] = rows
    params = pruned("nm", "tensor", 0.5)
    curves["2:4"] = [
        {
            "sparsity": 0.5,
            "loss": windows_loss(config, params, windows),
            "loss_finetuned": windows_loss(config, tuned(params, {"method": "nm"}), windows),
        }
    ]
    say(f"2:4: {curves['2:4']}")
    result["curves"] = curves

    # gradual pruning to 50% over the same 200 steps, from the dense model
    with tempfile.TemporaryDirectory() as out:
        tc = TrainConfig(
            out_dir=out,
            data=args.data,
            init_from=args.teacher,
            max_iters=args.finetune_iters,
            learning_rate=args.finetune_lr,
            min_lr=args.finetune_lr / 10,
            warmup_iters=0,
            lr_decay_iters=args.finetune_iters,
            eval_interval=args.finetune_iters,
            eval_iters=1,
            log_interval=args.finetune_iters,
            prune_to=0.5,
            prune_start=0,
            prune_end=args.finetune_iters - 50,
            prune_every=10,
        )
        train(tc, {}, quiet=True)
        g = load_checkpoint(Path(out) / RESUME_NAME).params
        result["gradual_50"] = {
            "loss": windows_loss(config, g, windows),
            "prune_start": 0,
            "prune_end": args.finetune_iters - 50,
            "prune_every": 10,
            "sparsity": float(np.mean([np.mean(g[n] == 0) for n in names])),
        }
    say(f"gradual: {result['gradual_50']}")

    # bytes on disk
    sizes = {"dense": Path(args.teacher).stat().st_size}
    for label, params, nm in (
        ("magnitude_50", pruned("magnitude", "tensor", 0.5), None),
        ("2:4", pruned("nm", "tensor", 0.5), (2, 4)),
    ):
        enc = prune.encode_sparse(params, names, nm)
        path = tmp / "s.safetensors"
        save_checkpoint(path, config, params, ck.tokenizer, meta, encoded=enc)
        assert all(np.array_equal(a, params[k]) for k, a in load_checkpoint(path).params.items())
        sizes[label] = path.stat().st_size
        sizes[label + "_codecs"] = sorted({e.codec for e in enc.values()})
    sizes["ratio_2:4"] = sizes["2:4"] / sizes["dense"]
    sizes["ratio_magnitude_50"] = sizes["magnitude_50"] / sizes["dense"]
    result["bytes"] = sizes
    say(f"bytes: {sizes}")

    # structured: speed and loss
    result["structured"] = {}
    for kind in ("heads", "neurons"):
        c2, p2, drop = structured.prune_structured(config, dense, kind, 0.25)
        steps = time_alternating(
            {
                "dense": minigpt_stepper(config, dense, 12, "numba"),
                kind: minigpt_stepper(c2, p2, 12, "numba"),
            },
            steps=10,
            repeats=args.repeats,
            warmup=2,
        )
        rates = {"dense": [], kind: []}
        for r in range(args.repeats):
            for name, (c, p) in (("dense", (config, dense)), (kind, (c2, p2)))[:: 1 if r % 2 == 0 else -1]:
                list(generate(c, p, [0], 8, seed=0))  # warm-up
                t0 = time.perf_counter()
                n = len(list(generate(c, p, [0], 200, seed=0)))
                rates[name].append(n / (time.perf_counter() - t0))
        path = tmp / "st.safetensors"
        save_checkpoint(path, c2, p2, ck.tokenizer, meta)
        tuned_params = finetune(path, args.data, args.finetune_iters, args.finetune_lr)
        entry = {
            "removed_per_layer": [len(d) for d in drop.values()],
            "head_counts": c2.head_counts,
            "mlp_widths": c2.mlp_widths,
            "params": int(sum(a.size for a in p2.values())),
            "params_dense": int(sum(a.size for a in dense.values())),
            "ms_per_step_dense": steps["dense"]["median"],
            "ms_per_step": steps[kind]["median"],
            "step_speedup": steps["dense"]["median"] / steps[kind]["median"],
            "sample_tok_s_dense": float(np.median(rates["dense"])),
            "sample_tok_s": float(np.median(rates[kind])),
            "loss": windows_loss(c2, p2, windows),
            "loss_finetuned": windows_loss(c2, tuned_params, windows),
            "file_bytes": path.stat().st_size,
        }
        entry["sample_speedup"] = entry["sample_tok_s"] / entry["sample_tok_s_dense"]
        result["structured"][kind] = entry
        say(f"{kind}: {entry}")

    m50 = next(r for r in curves["magnitude"] if r["sparsity"] == 0.5)
    w50 = next(r for r in curves["wanda"] if r["sparsity"] == 0.5)
    result["targets"] = {
        "magnitude50_ft_minus_dense": m50["loss_finetuned"] - result["dense_loss"],
        "magnitude50_ft_within_0.03": m50["loss_finetuned"] - result["dense_loss"] <= 0.03,
        "magnitude50_ft_minus_dense_ft": m50["loss_finetuned"] - result["dense_loss_finetuned"],
        "magnitude50_ft_within_0.03_of_dense_ft": m50["loss_finetuned"] - result["dense_loss_finetuned"]
        <= 0.03,
        "wanda50_beats_magnitude50": w50["loss"] < m50["loss"],
        "2:4_file_ratio": sizes["ratio_2:4"],
        "2:4_file_at_most_0.6": sizes["ratio_2:4"] <= 0.6,
        "heads25_faster_step_and_sampling": result["structured"]["heads"]["step_speedup"] > 1
        and result["structured"]["heads"]["sample_speedup"] > 1,
        "neurons25_faster_step_and_sampling": result["structured"]["neurons"]["step_speedup"] > 1
        and result["structured"]["neurons"]["sample_speedup"] > 1,
    }
    result["wall_s"] = time.time() - t_start
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    say(json.dumps(result["targets"], indent=1))
    say(f"wrote {args.out} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
