"""`minigpt prune` and `minigpt prune sensitivity`: pruning a checkpoint file, optionally
fine-tuning it with its masks kept, and writing a checkpoint that is really smaller.

The evaluation protocol (pinned here so figures are comparable): the loss over `eval_windows`
windows of block_size + 1 tokens, evenly spaced over the val split (the last 10% of the text,
minigpt.data.split), in batches of 32, no dropout. With 256 windows at block_size 64 that is
16,384 predictions, a few seconds per evaluation; `minigpt eval` gives the whole split.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import GPTConfig
from ..data import load_text, split
from ..errors import InputError
from ..evaluate import mean_loss
from . import prune, structured


def eval_windows(ids: np.ndarray, block_size: int, n_windows: int = 256) -> np.ndarray:
    """n_windows windows (N, T + 1), evenly spaced over ids (all of them if there are fewer)."""
    last = len(ids) - block_size - 1
    if last < 0:
        raise InputError(f"evaluation text too short: {len(ids)} tokens for windows of {block_size + 1}")
    starts = np.unique(np.linspace(0, last, num=min(n_windows, last + 1)).round().astype(np.int64))
    return np.stack([ids[s : s + block_size + 1] for s in starts])


def windows_loss(config: GPTConfig, params: dict, windows: np.ndarray, batch_size: int = 32) -> float:
    """Mean next-token loss over windows (N, T + 1): inputs the first T tokens, targets the last T.
    Each batch's mean is weighted by its number of targets (evaluate.mean_loss)."""
    batches = (windows[s : s + batch_size] for s in range(0, len(windows), batch_size))
    return mean_loss(config, params, ((w[:, :-1], w[:, 1:]) for w in batches))[0]


@dataclass
class PruneSettings:
    ckpt: str
    out: str | None = None
    method: str = "magnitude"
    sparsity: float = 0.5
    scope: str = "tensor"
    n: int = 2
    m: int = 4
    tensors: list | None = None  # explicit names; default: attention and MLP weights
    include_embeddings: bool = False
    include_layernorm: bool = False
    calib_data: str | None = None
    calib_seqs: int = 32
    score: str = "norm"  # structured: norm or loss
    data: str | None = None  # evaluation (and fine-tuning) text
    eval_windows: int = 256
    finetune_iters: int = 0
    finetune_lr: float = 3e-4
    batch_size: int = 12
    seed: int = 0


def _names(s: PruneSettings, config: GPTConfig, params: dict) -> list[str]:
    if s.tensors:
        return prune.check_names(params, s.tensors)
    return prune.prunable_names(config, s.include_embeddings, s.include_layernorm)


def _calib(s: PruneSettings, ck) -> np.ndarray | None:
    if not s.calib_data:
        return None
    ids = ck.tokenizer.encode(load_text(s.calib_data))
    train_ids, _ = split(ids, ck.config.block_size)  # calibrate on the train split, evaluate on val
    return prune.calibration_batch(train_ids, ck.config.block_size, s.calib_seqs, s.seed)


def _val_windows(s: PruneSettings, ck) -> np.ndarray | None:
    if not s.data:
        return None
    _, val_ids = split(ck.tokenizer.encode(load_text(s.data)), ck.config.block_size)
    return eval_windows(val_ids, ck.config.block_size, s.eval_windows)


def finetune(ckpt_path, data: str, iters: int, lr: float, batch_size: int = 12, seed: int = 0) -> dict:
    """Fine-tune a pruned checkpoint for iters steps through minigpt.train with its masks kept
    (the checkpoint's meta "pruning" makes train keep its zeros at zero). Cosine decay from lr to
    lr / 10, no warmup. Returns the final parameters."""
    from ..train import RESUME_NAME, TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(
            out_dir=tmp,
            data=data,
            init_from=str(ckpt_path),
            max_iters=iters,
            learning_rate=lr,
            min_lr=lr / 10,
            warmup_iters=0,
            lr_decay_iters=iters,
            batch_size=batch_size,
            seed=seed,
            eval_interval=max(iters, 1),
            eval_iters=1,
            log_interval=max(iters, 1),
        )
        train(tc, {}, quiet=True)
        return load_checkpoint(Path(tmp) / RESUME_NAME).params  # the final weights (ckpt is best-val)


def run_prune(s: PruneSettings, say=print) -> dict:
    """Prune s.ckpt into s.out; returns the report (JSON-able)."""
    if not s.out:
        raise InputError("--out is required: where to write the pruned checkpoint")
    if s.method not in prune.METHODS:
        raise InputError(f"unknown method {s.method!r}: choose one of {', '.join(prune.METHODS)}")
    if s.finetune_iters and not s.data:
        raise InputError("--finetune-iters needs --data PATH, the text to fine-tune on")
    if isinstance(s.finetune_iters, bool) or not isinstance(s.finetune_iters, int) or s.finetune_iters < 0:
        raise InputError(f"--finetune-iters must be an integer >= 0, got {s.finetune_iters!r}")
    prune.check_sparsity(s.sparsity)
    ck = load_checkpoint(s.ckpt)
    config, params = ck.config, {k: v.copy() for k, v in ck.params.items()}
    dense_bytes = Path(s.ckpt).stat().st_size
    windows = _val_windows(s, ck)
    result = {
        "method": s.method,
        "ckpt": s.ckpt,
        "out": s.out,
        "params_before": int(sum(a.size for a in params.values())),
    }
    if windows is not None:
        result["val_loss_before"] = windows_loss(config, params, windows)
    calib = _calib(s, ck)
    nm = None
    if s.method in structured.KINDS:
        config, params, drop = structured.prune_structured(
            config, params, s.method, s.sparsity, s.score, s.scope, calib
        )
        names = []
        info = {
            "method": s.method,
            "sparsity": s.sparsity,
            "score": s.score,
            "scope": s.scope,
            "removed": {str(i): [int(u) for u in d] for i, d in drop.items()},
        }
    else:
        names = _names(s, config, params)
        if s.method == "nm":
            nm = prune.check_nm(s.n, s.m)
        if s.method == "wanda" and calib is None:
            raise InputError("wanda needs calibration data: give --calib-data PATH (e.g. the training text)")
        prune.prune_params(config, params, s.method, s.sparsity, names, s.scope, s.n, s.m, calib, s.seed)
        info = {
            "method": s.method,
            "sparsity": s.sparsity if s.method != "nm" else 1 - s.n / s.m,
            "scope": s.scope,
            "tensors": names,
        }
        if nm:
            info.update(n=s.n, m=s.m)
    meta = dict(ck.meta, pruning=info)
    meta.pop("optim_t", None)
    if windows is not None:
        result["val_loss_pruned"] = windows_loss(config, params, windows)
    if s.finetune_iters:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_ckpt = Path(tmp) / "pruned.safetensors"
            save_checkpoint(tmp_ckpt, config, params, ck.tokenizer, meta)
            say(f"fine-tuning {s.finetune_iters} steps (masks kept) ...")
            params = finetune(tmp_ckpt, s.data, s.finetune_iters, s.finetune_lr, s.batch_size, s.seed)
        meta["pruning"] = dict(info, finetune_iters=s.finetune_iters, finetune_lr=s.finetune_lr)
        if windows is not None:
            result["val_loss_finetuned"] = windows_loss(config, params, windows)
    encoded = prune.encode_sparse(params, names, nm)
    save_checkpoint(s.out, config, params, ck.tokenizer, meta, encoded=encoded)
    rep = prune.report(params, names, encoded)
    result.update(
        rep,
        params_after=rep["params"],
        file_bytes_before=dense_bytes,
        file_bytes_after=Path(s.out).stat().st_size,
        config=config.to_dict(),
    )
    result["file_ratio"] = result["file_bytes_after"] / dense_bytes
    if windows is not None:
        result["eval"] = f"{len(windows)} val windows of {config.block_size + 1} tokens, evenly spaced"
    return result


def format_result(r: dict) -> str:
    lines = [prune.format_report(r)] if r["tensors"] else []
    if r["params_after"] != r["params_before"]:
        lines.append(
            f"parameters {r['params_before']:,} -> {r['params_after']:,} (structured: "
            f"head_counts {r['config'].get('head_counts')}, mlp_widths {r['config'].get('mlp_widths')})"
        )
    lines.append(
        f"file {r['ckpt']}: {r['file_bytes_before']:,} bytes -> {r['out']}: {r['file_bytes_after']:,} bytes "
        f"({r['file_ratio']:.2f}x)"
    )
    if "val_loss_before" in r:
        losses = f"val loss {r['val_loss_before']:.4f} dense -> {r['val_loss_pruned']:.4f} pruned"
        if "val_loss_finetuned" in r:
            losses += f" -> {r['val_loss_finetuned']:.4f} fine-tuned"
        lines.append(f"{losses} ({r['eval']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# sensitivity analysis (Distiller's perform_sensitivity_analysis)


def sensitivity(config: GPTConfig, params: dict, names, sparsities, windows: np.ndarray) -> dict:
    """Prune each tensor alone by magnitude at each sparsity and measure the loss on windows;
    every other tensor stays dense. Returns {"base": loss, "rows": [{tensor, sparsity, loss,
    delta}]}."""
    names = prune.check_names(params, names)
    sparsities = [prune.check_sparsity(x) for x in sparsities]
    base = windows_loss(config, params, windows)
    rows = []
    for name in names:
        original = params[name]
        for s in sparsities:
            params[name] = original * prune.mask_from_scores(np.abs(original), s)
            loss = windows_loss(config, params, windows)
            rows.append({"tensor": name, "sparsity": s, "loss": loss, "delta": loss - base})
        params[name] = original
    return {"base": base, "sparsities": sparsities, "rows": rows}


def format_sensitivity(r: dict) -> str:
    sp = r["sparsities"]
    lines = [
        f"val loss increase when one tensor alone is pruned (dense {r['base']:.4f})",
        f"{'tensor':28s}" + "".join(f"{s:>9.0%}" for s in sp),
    ]
    by_tensor = {}
    for row in r["rows"]:
        by_tensor.setdefault(row["tensor"], []).append(row["delta"])
    for name, deltas in by_tensor.items():
        lines.append(f"{name:28s}" + "".join(f"{d:+9.4f}" for d in deltas))
    return "\n".join(lines)


def plot_sensitivity(r: dict, path) -> str:
    """A PNG of loss increase against sparsity, one line per tensor; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(
            "--plot needs matplotlib (pip install matplotlib); the table above has the same numbers"
        ) from None
    by_tensor = {}
    for row in r["rows"]:
        by_tensor.setdefault(row["tensor"], []).append((row["sparsity"], row["delta"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    for k, (name, pts) in enumerate(by_tensor.items()):  # 10 colours repeat: a line style per cycle
        ax.plot(*zip(*pts), marker="o", ls=styles[(k // 10) % 4], label=name)
    ax.set_xlabel("sparsity of the one pruned tensor")
    ax.set_ylabel("val loss increase")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def run_sensitivity(s: PruneSettings, sparsities, plot=None) -> dict:
    if not s.data:
        raise InputError("sensitivity needs --data PATH: the text whose val split measures the loss")
    ck = load_checkpoint(s.ckpt)
    r = sensitivity(
        ck.config, dict(ck.params), _names(s, ck.config, ck.params), sparsities, _val_windows(s, ck)
    )
    r["eval"] = f"{s.eval_windows} val windows (at most) of {ck.config.block_size + 1} tokens, evenly spaced"
    if plot:
        r["plot"] = plot_sensitivity(r, plot)
    return r
