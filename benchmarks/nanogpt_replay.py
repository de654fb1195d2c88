"""nanoGPT's own random draws replayed through minigpt: does minigpt print what nanoGPT prints?

nanoGPT's CPU Shakespeare recipe,

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

draws everything from torch's global generator after torch.manual_seed(1337): the default inits of
nn.Embedding and nn.Linear as the model is built, then `_init_weights`' normal(0, 0.02) draws (and
the c_proj re-draws with std 0.02 / sqrt(2 * n_layer)), then one torch.randint per batch: the first
training batch, 20 train and 20 val batches at each evaluation, and the next training batch right
after each forward. This script

1. re-creates nanoGPT master's model.py and train.py for that recipe in torch (written here, not
   imported: same module construction order, same init, same RNG call order, float32, no compile),
   prints its log lines "step N: train loss X, val loss Y", and records its initial weights (in
   minigpt's names and layouts) and every batch's window starts;
2. replays exactly those draws through minigpt's own training pieces (gpt_forward, gpt_backward,
   clip_grad_norm, AdamW, get_lr; as minigpt/train.py's loop), evaluating on the recorded windows;
3. optionally re-runs the torch re-creation with the tanh GELU (minigpt's activation, GPT-2's) on the
   same draws, which isolates the one known difference: nanoGPT uses the exact erf GELU (nn.GELU()).

Then it prints the step-2000 estimates (the mean loss over 20 random batches, as nanoGPT prints
them) side by side, the loss over the whole val split (consecutive windows, as `minigpt eval`),
and how far apart the per-step training losses of the runs are.

    flock /tmp/minigpt-heavy.lock python benchmarks/nanogpt_replay.py \\
        --data ../shared/data/tinyshakespeare.txt --json /tmp/nanogpt_replay.json

--gelu erf tanh (the default) runs the torch re-creation with both GELUs; --gelu erf runs only
nanoGPT's. One deliberate change to nanoGPT's loop: nanoGPT does one more update after its last
evaluation (its loop breaks when iter_num > max_iters), which changes nothing it prints; here the
run stops at that evaluation, as minigpt does, so both final models have 2000 updates.

Measured on the 2-core dev machine (torch 2.13.0, 2 threads, float32, seed 1337; about 7 minutes for
the three runs), step 2000, estimate on the recorded windows / whole val split:

    torch re-creation, erf GELU (nanoGPT)   train 1.7648  val 1.8857  val split 1.8983
    minigpt on the same draws (tanh GELU)   train 1.7650  val 1.8858  val split 1.8984
    torch re-creation, tanh GELU            train 1.7650  val 1.8858  val split 1.8984

The re-creation prints nanoGPT's 1.8857. minigpt and the tanh torch run agree to 1.6e-6 in every
step's training loss; the erf run differs from them by at most 5.4e-4 (the GELU, nothing else).

Needs torch (pip install torch==2.13.0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    sys.exit("benchmarks/nanogpt_replay.py needs torch (pip install torch==2.13.0)")

from minigpt import GPTConfig
from minigpt.data import iter_windows, load_text
from minigpt.evaluate import evaluate
from minigpt.model import gpt_backward, gpt_forward
from minigpt.optim import AdamW, clip_grad_norm, get_lr
from minigpt.train import ADAM_EPS

# nanoGPT's config/train_shakespeare_char.py with the command line above (train.py's defaults for
# the rest: bias False, weight_decay 0.1, beta1 0.9, grad_clip 1.0, decay_lr True)
MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.0)
TRAIN = dict(batch_size=12, max_iters=2000, learning_rate=1e-3, warmup_iters=100, lr_decay_iters=2000,
             min_lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_interval=250,
             eval_iters=20)
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


# ---- nanoGPT's model.py (the parts this recipe uses) -------------------------------------------


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's; torch's had no bias=False then)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))  # no RNG
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_attn = nn.Linear(cfg["n_embd"], 3 * cfg["n_embd"], bias=cfg["bias"])
        self.c_proj = nn.Linear(cfg["n_embd"], cfg["n_embd"], bias=cfg["bias"])
        self.attn_dropout = nn.Dropout(cfg["dropout"])
        self.resid_dropout = nn.Dropout(cfg["dropout"])
        self.n_head, self.n_embd, self.dropout = cfg["n_head"], cfg["n_embd"], cfg["dropout"]

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (a.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for a in (q, k, v))  # (B, NH, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0,
                                           is_causal=True)  # fmt: skip
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg["n_embd"], 4 * cfg["n_embd"], bias=cfg["bias"])
        self.gelu = nn.GELU(approximate=cfg["gelu_approximate"])  # nanoGPT: nn.GELU(), the exact erf form
        self.c_proj = nn.Linear(4 * cfg["n_embd"], cfg["n_embd"], bias=cfg["bias"])
        self.dropout = nn.Dropout(cfg["dropout"])

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg["n_embd"], bias=cfg["bias"])
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg["n_embd"], bias=cfg["bias"])
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        # construction order = RNG order: every nn.Embedding (normal) and nn.Linear (kaiming uniform)
        # draws its default init here, before _init_weights draws again
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg["vocab_size"], cfg["n_embd"]),
            wpe=nn.Embedding(cfg["block_size"], cfg["n_embd"]),
            drop=nn.Dropout(cfg["dropout"]),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])]),
            ln_f=LayerNorm(cfg["n_embd"], bias=cfg["bias"]),
        ))  # fmt: skip
        self.lm_head = nn.Linear(cfg["n_embd"], cfg["vocab_size"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: lm_head's draw (the last in apply) wins
        self.apply(self._init_weights)  # post-order: children first, lm_head last
        for pn, p in self.named_parameters():  # the tied weight is listed once, as transformer.wte.weight
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg["n_layer"]))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        """AdamW, decay on tensors with 2 or more dimensions (not fused: that is CUDA only)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


def to_minigpt(model: GPT) -> dict[str, np.ndarray]:
    """nanoGPT's state dict in minigpt's (Hugging Face GPT-2) names and layouts: the Linear weights
    (out, in) transposed to Conv1D's (in, out); wte.weight is the tied lm_head."""
    params = {}
    for name, p in model.named_parameters():
        name = name.removeprefix("transformer.")
        a = p.detach().numpy()  # shares the tensor's memory, which training will change: copy
        params[name] = np.array(a.T if name.endswith(TRANSPOSED) else a, dtype=np.float32, order="C", copy=True)
    return params


# ---- nanoGPT's train.py, recording the draws ----------------------------------------------------


def nanogpt_lr(it):
    """nanoGPT master's get_lr (warmup learning_rate * (it + 1) / (warmup_iters + 1))."""
    tr = TRAIN
    if it < tr["warmup_iters"]:
        return tr["learning_rate"] * (it + 1) / (tr["warmup_iters"] + 1)
    if it > tr["lr_decay_iters"]:
        return tr["min_lr"]
    decay_ratio = (it - tr["warmup_iters"]) / (tr["lr_decay_iters"] - tr["warmup_iters"])
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return tr["min_lr"] + coeff * (tr["learning_rate"] - tr["min_lr"])


def windows(data, starts, T):
    """x (B, T) and y (B, T) as int64 for the given window starts."""
    offsets = np.arange(T)
    idx = np.asarray(starts, dtype=np.int64)[:, None] + offsets
    return data[idx].astype(np.int64), data[idx + 1].astype(np.int64)


def run_nanogpt(train_data, val_data, vocab_size, seed, gelu, say):
    """nanoGPT's run in torch; returns its log, final whole-val loss, initial weights and draws."""
    B, T, tr = TRAIN["batch_size"], MODEL["block_size"], TRAIN
    torch.manual_seed(seed)
    cfg = dict(MODEL, vocab_size=vocab_size, gelu_approximate="none" if gelu == "erf" else "tanh")
    model = GPT(cfg)
    init = to_minigpt(model)
    optimizer = model.configure_optimizers(tr["weight_decay"], tr["learning_rate"], (tr["beta1"], tr["beta2"]))
    draws = {"train": [], "eval": {}}

    def get_batch(data):
        ix = torch.randint(len(data) - T, (B,))  # the global generator, as nanoGPT
        x, y = windows(data, ix.numpy(), T)
        return ix.numpy().tolist(), torch.from_numpy(x), torch.from_numpy(y)

    @torch.no_grad()
    def estimate_loss(it):
        out, starts = {}, {}
        model.eval()
        for split, data in (("train", train_data), ("val", val_data)):
            losses = torch.zeros(tr["eval_iters"])  # float32, as nanoGPT
            starts[split] = []
            for k in range(tr["eval_iters"]):
                ix, X, Y = get_batch(data)
                starts[split].append(ix)
                losses[k] = model(X, Y)[1].item()
            out[split] = losses.mean().item()
        model.train()
        draws["eval"][it] = starts
        return out

    log, step_losses = [], []
    ix, X, Y = get_batch(train_data)  # the very first batch
    draws["train"].append(ix)
    iter_num, t0 = 0, time.perf_counter()
    while True:
        lr = nanogpt_lr(iter_num)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if iter_num % tr["eval_interval"] == 0:
            losses = estimate_loss(iter_num)
            say(f"[torch {gelu}] step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            log.append({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"]})
        if iter_num >= tr["max_iters"]:
            break  # nanoGPT makes one more update here before it stops; nothing it prints depends on it
        _, loss = model(X, Y)
        ix, X, Y = get_batch(train_data)  # the next batch, drawn before backward as nanoGPT
        draws["train"].append(ix)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_losses.append(loss.item())
        iter_num += 1
    seconds = time.perf_counter() - t0
    total = count = 0
    with torch.no_grad():
        model.eval()
        for x, y in iter_windows(val_data.astype(np.int64), T, 32):
            total += model(torch.from_numpy(x), torch.from_numpy(y))[1].item() * y.size
            count += y.size
    return {"log": log, "val_full_split": total / count, "step_losses": step_losses, "seconds": seconds,
            "init": init, "draws": draws}  # fmt: skip


# ---- the replay through minigpt -----------------------------------------------------------------


def run_minigpt(train_data, val_data, vocab_size, init, draws, say):
    """minigpt's training step (as minigpt/train.py) on nanoGPT's initial weights and batches."""
    tr, T = TRAIN, MODEL["block_size"]
    config = GPTConfig(vocab_size=vocab_size, **MODEL)  # activation "gelu": the tanh approximation
    params = {name: a.copy() for name, a in init.items()}
    optimizer = AdamW(params, tr["beta1"], tr["beta2"], ADAM_EPS, tr["weight_decay"])
    train_ids, val_ids = train_data.astype(np.int64), val_data.astype(np.int64)

    def estimate(ids, starts):
        return float(np.mean([gpt_forward(config, params, *windows(ids, s, T))[1] for s in starts]))

    log, step_losses, t0 = [], [], time.perf_counter()
    for step in range(tr["max_iters"] + 1):
        if step % tr["eval_interval"] == 0:
            ev = draws["eval"][step]
            train_loss, val_loss = estimate(train_ids, ev["train"]), estimate(val_ids, ev["val"])
            say(f"[minigpt]    step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
            log.append({"iter": step, "train_loss": train_loss, "val_loss": val_loss})
        if step == tr["max_iters"]:
            break
        lr = get_lr(step, tr["learning_rate"], tr["warmup_iters"], tr["lr_decay_iters"], tr["min_lr"])
        x, y = windows(train_ids, draws["train"][step], T)
        _, loss, cache = gpt_forward(config, params, x, y)
        grads = gpt_backward(cache)
        clip_grad_norm(grads, tr["grad_clip"])
        optimizer.step(params, grads, lr)
        step_losses.append(float(loss))
    seconds = time.perf_counter() - t0
    return {"log": log, "val_full_split": evaluate(config, params, val_ids, 32)["val_loss"],
            "step_losses": step_losses, "seconds": seconds}  # fmt: skip


def compare(a, b):
    """How far apart two runs' per-step training losses are."""
    d = np.abs(np.array(a) - np.array(b))
    first = {tol: next((i for i, x in enumerate(d) if x > tol), None) for tol in (1e-5, 1e-3, 1e-2)}
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "first_step_diff_over": {str(k): v for k, v in first.items()}}  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--seed", type=int, default=1337, help="torch.manual_seed, as nanoGPT's 1337")
    ap.add_argument("--gelu", nargs="+", choices=("erf", "tanh"), default=["erf", "tanh"],
                    help="the torch re-creation's GELU, one run each; the first run's draws are replayed")
    ap.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    args = ap.parse_args()

    def say(line):
        print(line, flush=True)

    text = load_text(args.data)
    chars = sorted(set(text))  # data/shakespeare_char/prepare.py: the whole text's characters
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = len(data)
    train_data, val_data = data[: int(n * 0.9)], data[int(n * 0.9) :]
    say(f"vocab {len(chars)}, {len(train_data):,} train / {len(val_data):,} val tokens; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip

    runs, draws, init = {}, None, None
    for i, gelu in enumerate(args.gelu):
        r = run_nanogpt(train_data, val_data, len(chars), args.seed, gelu, say)
        if i == 0:
            draws, init = r["draws"], r["init"]
        else:  # the GELU consumes no random numbers: the draws must be the same
            same = r["draws"] == draws and all(np.array_equal(init[k], r["init"][k]) for k in init)
            if not same:
                sys.exit(f"the torch {gelu} run drew different weights or batches than the {args.gelu[0]} run")
        runs[f"torch_{gelu}"] = {k: r[k] for k in ("log", "val_full_split", "step_losses", "seconds")}
        if i == 0:
            runs["minigpt"] = run_minigpt(train_data, val_data, len(chars), init, draws, say)

    say(f"\nstep {TRAIN['max_iters']}: the {TRAIN['eval_iters']}-batch estimates on the recorded windows, the loss "
        "over the whole val split, and each run's wall time (training and evaluations):")  # fmt: skip
    say(f"{'run':<12} {'train est':>10} {'val est':>10} {'val split':>10} {'seconds':>8}")
    for name, r in runs.items():
        last = r["log"][-1]
        say(f"{name:<12} {last['train_loss']:>10.4f} {last['val_loss']:>10.4f} {r['val_full_split']:>10.4f} "
            f"{r['seconds']:>8.1f}")  # fmt: skip
    comparisons = {}
    for name in runs:
        if name != "minigpt":
            comparisons[f"minigpt_vs_{name}"] = compare(runs["minigpt"]["step_losses"], runs[name]["step_losses"])
            say(f"per-step training loss, minigpt vs {name}: {json.dumps(comparisons[f'minigpt_vs_{name}'])}")
    if args.json:
        result = {"seed": args.seed, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "model": MODEL, "train": TRAIN, "runs": runs, "comparisons": comparisons,
                  "train_starts": draws["train"], "eval_starts": draws["eval"]}  # fmt: skip
        Path(args.json).write_text(json.dumps(result) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
