"""The baby Shakespeare recipe trained by the PyTorch twin (tests/torch_twin.py), on exactly the
batches minigpt draws for the same seed, to measure what the recipe itself gives on this machine.

    python benchmarks/baby_torch.py --data ../shared/data/tinyshakespeare.txt --seeds 1337 1 2 3

Needs torch (pip install torch==2.13.0). Prints, per seed, the step-2000 estimate (eval_iters=20
random batches, as nanoGPT prints it) and the loss over the whole val split (as `minigpt eval`).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import torch_twin

from minigpt import GPTConfig, init_params
from minigpt.data import get_batch, iter_windows, load_text, split
from minigpt.optim import get_lr
from minigpt.tokenizer import CharTokenizer
from minigpt.train import STREAM_BATCH, STREAM_EVAL, preset, step_rng


def run(text, seed):
    model, tr = preset("baby")
    tok = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tok.vocab_size, **model)
    train_ids, val_ids = split(tok.encode(text), config.block_size)
    tp = torch_twin.to_torch(init_params(config, seed, np.float32))
    opt = torch_twin.make_optimizer(tp, tr["learning_rate"], tr["beta1"], tr["beta2"], tr["weight_decay"])
    B, T = tr["batch_size"], config.block_size

    def estimate(ids, rng):
        with torch.no_grad():
            return float(np.mean([torch_twin.forward(config, tp, *get_batch(ids, B, T, rng))[1].item()
                                  for _ in range(tr["eval_iters"])]))  # fmt: skip

    t0 = time.perf_counter()
    for step in range(tr["max_iters"]):
        lr = get_lr(step, tr["learning_rate"], tr["warmup_iters"], tr["lr_decay_iters"], tr["min_lr"])
        x, y = get_batch(train_ids, B, T, step_rng(seed, step, STREAM_BATCH))
        torch_twin.train_step(config, tp, opt, x, y, lr, tr["grad_clip"])
    ms = (time.perf_counter() - t0) / tr["max_iters"] * 1000
    rng = step_rng(seed, tr["max_iters"], STREAM_EVAL)
    train_est, val_est = estimate(train_ids, rng), estimate(val_ids, rng)
    total = count = 0
    with torch.no_grad():
        for x, y in iter_windows(val_ids, T, 32):
            total += torch_twin.forward(config, tp, x, y)[1].item() * y.size
            count += y.size
    return {"seed": seed, "train_estimate": train_est, "val_estimate": val_est, "val_full_split": total / count,
            "ms_per_iter": ms}  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    args = ap.parse_args()
    text = load_text(args.data)
    for s in args.seeds:
        print(json.dumps(run(text, s)), flush=True)
