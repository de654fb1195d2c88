"""The baby Shakespeare recipe trained by the PyTorch twin (tests/torch_twin.py), on exactly the
batches minigpt draws for the same seed, to measure what the recipe itself gives on this machine.

    python benchmarks/baby_torch.py --data ../shared/data/tinyshakespeare.txt --seeds 1337 1 2 3
    python benchmarks/baby_torch.py --data ../shared/data/tinyshakespeare.txt --torch-rng --seeds 1337 1 2 3

--torch-rng draws the initial weights and every batch from torch's generator instead (as nanoGPT
does, with torch.randint), so the runs are independent draws of what nanoGPT itself would print.

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
from minigpt.model import param_shapes
from minigpt.optim import get_lr
from minigpt.tokenizer import CharTokenizer
from minigpt.train import STREAM_BATCH, STREAM_EVAL, preset, step_rng


def torch_init(config, gen):
    """GPT-2 init as init_params, but drawn from torch's generator (nanoGPT's draws)."""
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        elif ".ln_" in name or name.startswith("ln_f"):
            params[name] = np.ones(shape, np.float32)
        else:
            std = 0.02 / np.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
            params[name] = torch.normal(0.0, std, size=shape, generator=gen).numpy()
    return params


def torch_batch(ids, B, T, gen):
    """nanoGPT's get_batch: B random windows of T + 1 tokens, from torch's generator."""
    ix = torch.randint(len(ids) - T, (B,), generator=gen).numpy()
    x = np.stack([ids[i : i + T] for i in ix])
    y = np.stack([ids[i + 1 : i + 1 + T] for i in ix])
    return x, y


def run(text, seed, torch_rng=False):
    model, tr = preset("baby")
    tok = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tok.vocab_size, **model)
    train_ids, val_ids = split(tok.encode(text), config.block_size)
    gen = torch.Generator().manual_seed(seed)
    tp = torch_twin.to_torch(torch_init(config, gen) if torch_rng else init_params(config, seed, np.float32))
    opt = torch_twin.make_optimizer(tp, tr["learning_rate"], tr["beta1"], tr["beta2"], tr["weight_decay"])
    B, T = tr["batch_size"], config.block_size

    def batch(ids, rng):
        return torch_batch(ids, B, T, gen) if torch_rng else get_batch(ids, B, T, rng)

    def estimate(ids, rng):
        with torch.no_grad():
            return float(np.mean([torch_twin.forward(config, tp, *batch(ids, rng))[1].item()
                                  for _ in range(tr["eval_iters"])]))  # fmt: skip

    t0 = time.perf_counter()
    for step in range(tr["max_iters"]):
        lr = get_lr(step, tr["learning_rate"], tr["warmup_iters"], tr["lr_decay_iters"], tr["min_lr"])
        x, y = batch(train_ids, step_rng(seed, step, STREAM_BATCH))
        torch_twin.train_step(config, tp, opt, x, y, lr, tr["grad_clip"])
    ms = (time.perf_counter() - t0) / tr["max_iters"] * 1000
    rng = step_rng(seed, tr["max_iters"], STREAM_EVAL)
    train_est, val_est = estimate(train_ids, rng), estimate(val_ids, rng)
    total = count = 0
    with torch.no_grad():
        for x, y in iter_windows(val_ids, T, 32):
            total += torch_twin.forward(config, tp, x, y)[1].item() * y.size
            count += y.size
    return {"seed": seed, "rng": "torch" if torch_rng else "minigpt", "train_estimate": train_est, "val_estimate": val_est, "val_full_split": total / count,
            "ms_per_iter": ms}  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--torch-rng", action="store_true", help="draw init and batches from torch (as nanoGPT)")
    args = ap.parse_args()
    text = load_text(args.data)
    for s in args.seeds:
        print(json.dumps(run(text, s, args.torch_rng)), flush=True)
