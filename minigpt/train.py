"""Training: data -> tokenizer -> model -> loop, as nanoGPT's train.py.

Each step: for each of gradient_accumulation_steps micro-batches, forward and backward with the
loss scaled by 1 / steps (so the gradients add up to the mean); clip the global gradient norm;
one AdamW update at the scheduled learning rate. Every eval_interval steps (and at the last),
the train and val losses are estimated on eval_iters random batches; the best-val model is kept.

Files in out_dir:
    ckpt.safetensors     the best-val model (what eval, sample and --init-from read)
    resume.safetensors   the latest training state: parameters, AdamW moments and step, written
                         at every evaluation, at the end and on Ctrl-C (what --resume reads)
    metrics.jsonl        one JSON object per line: evaluations {"iter", "train_loss", "val_loss"}
                         and log lines {"iter", "loss", "lr", "ms_per_iter", "tokens_per_s", ...}
    resume_extra.safetensors   only when the objective trains tensors of its own besides the
                         model's (a distillation projection): those tensors and their AdamW moments

What a step minimizes is an `Objective`: by default the model's own next-token cross-entropy.
Distillation (compress/distill.py) plugs in its own objective and reuses everything else here.

Randomness is a pure function of (seed, step): the batches, dropout masks and evaluation batches
of step s come from numpy generators seeded with [seed, s, stream] (as JAX's fold_in). A resumed
run therefore needs only the seed and the step to draw exactly what an uninterrupted run draws,
and gives exactly its losses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from .config import GPTConfig
from .data import default_corpus, get_batch, load_text, split
from .errors import InputError
from .evaluate import estimate_loss
from .model import gpt_backward, gpt_forward, init_params, num_params
from .optim import AdamW, clip_grad_norm, get_lr
from .tokenizer import CharTokenizer

CKPT_NAME = "ckpt.safetensors"
RESUME_NAME = "resume.safetensors"
RESUME_EXTRA_NAME = "resume_extra.safetensors"
METRICS_NAME = "metrics.jsonl"
STREAM_BATCH, STREAM_DROPOUT, STREAM_EVAL = 0, 1, 2
ADAM_EPS = 1e-8


class TrainingError(RuntimeError):
    """Training cannot go on (the loss became nan or inf); the message says what to try."""


@dataclass
class TrainConfig:
    out_dir: str = "out"
    data: str | None = None  # a UTF-8 text file; None: the embedded Python reference text
    dtype: str = "float32"  # float32 or float64 (for exact comparisons)
    seed: int = 1337
    batch_size: int = 12  # B: sequences per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_iters: int = 2000  # optimizer steps
    learning_rate: float = 1e-3  # peak, after warmup
    min_lr: float = 1e-4  # the cosine decay ends here
    warmup_iters: int = 100
    lr_decay_iters: int = 2000  # usually max_iters, as Chinchilla
    decay_lr: bool = True  # False: constant learning_rate
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1  # on 2-D tensors only
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    eval_interval: int = 250
    eval_iters: int = 20  # batches per loss estimate
    log_interval: int = 10
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)
    resume: bool = False  # continue out_dir's run from resume.safetensors
    qat: str | None = None  # e.g. "w4g32": quantization-aware training (minigpt.compress.quantize.qat_objective)
    data_parallel: bool = False  # under `mpiexec -n R`: R ranks split each global batch (minigpt/parallel.py)
    collective_timeout: float = 600.0  # data-parallel: seconds a rank waits for the others before aborting
    # gradual magnitude pruning (compress/prune.py): sparsity 0 -> prune_to on Zhu & Gupta's cubic
    # schedule between updates prune_start and prune_end, masks updated every prune_every updates
    prune_to: float = 0.0  # final sparsity of the attention and MLP weights, in [0, 1); 0: no pruning
    prune_start: int = 0
    prune_end: int = 0  # the best model is kept from here on (ckpt.safetensors needs max_iters >= prune_end)
    prune_every: int = 10

    def __post_init__(self):
        positive = ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a number >= 0, got {v!r}")
        if isinstance(self.collective_timeout, bool) or not isinstance(self.collective_timeout, (int, float)) \
                or not self.collective_timeout > 0 or not math.isfinite(self.collective_timeout):
            raise InputError(f"collective_timeout must be a number of seconds > 0, got {self.collective_timeout!r}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {v!r}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.qat is not None:
            from .compress.quantize import parse_spec

            parse_spec(self.qat)  # a bad spec fails now, with its message
        if not isinstance(self.prune_to, (int, float)) or not 0.0 <= self.prune_to < 1.0:
            raise InputError(f"prune_to must be a sparsity in [0, 1), got {self.prune_to!r}")
        if self.prune_to > 0:
            for name in ("prune_start", "prune_end", "prune_every"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "prune_every" else 0):
                    raise InputError(f"{name} must be an integer >= {1 if name == 'prune_every' else 0}, got {v!r}")
            if not self.prune_start < self.prune_end:
                raise InputError(f"gradual pruning needs prune_start < prune_end, got {self.prune_start}, {self.prune_end}")
        if self.resume and self.init_from:
            raise InputError("--resume and --init-from exclude each other: resume continues a run, init-from starts one")


# Presets: model fields (GPTConfig) and training fields (TrainConfig); any flag overrides them.
PRESETS = {
    # nanoGPT's published CPU recipe for Shakespeare (README, "I only have a macbook")
    "baby": {
        "model": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.0),
        "train": dict(batch_size=12, max_iters=2000, learning_rate=1e-3, warmup_iters=100, lr_decay_iters=2000,
                      min_lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                      eval_interval=250, eval_iters=20, log_interval=10),
    },
    # a smoke run: trains in seconds
    "tiny": {
        "model": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=True, dropout=0.0),
        "train": dict(batch_size=8, max_iters=100, learning_rate=3e-3, warmup_iters=10, lr_decay_iters=100,
                      min_lr=3e-4, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                      eval_interval=50, eval_iters=5, log_interval=10),
    },
}
DEFAULT_PRESET = "baby"


def preset(name: str) -> tuple[dict, dict]:
    """(model fields, train fields) of a preset."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name]["model"]), dict(PRESETS[name]["train"])


def resume_path(out_dir) -> Path:
    """The run's resume state, which --resume needs."""
    path = Path(out_dir) / RESUME_NAME
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} not found; start the run without --resume")
    return path


def step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
    """The generator for one stream (batches, dropout, evaluation) at one step."""
    return np.random.default_rng([seed, step, stream])


def prepare_out_dir(out_dir) -> Path:
    """Create out_dir and prove it is writable now, not after an hour of training."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise InputError(f"cannot write to output directory {path}: {e.strerror or e}") from None
    return path


class Reporter:
    """Log lines on a terminal with a tqdm progress bar, or as plain lines when the output is
    not a terminal (CI logs stay clean); every record also goes to metrics.jsonl."""

    def __init__(self, metrics_path: Path, stream, total: int, initial: int, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self.metrics = open(metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        # disable=None: tqdm shows the bar only when stderr is a terminal
        self.bar = tqdm(total=total, initial=initial, disable=None if not quiet else True,
                        unit="it", dynamic_ncols=True, leave=False)

    def record(self, line: str, **fields):
        self.metrics.write(json.dumps(fields) + "\n")
        self.metrics.flush()
        self.say(line)

    def say(self, line: str):
        if self.quiet:
            return
        if self.bar.disable:
            print(line, file=self.stream, flush=True)
        else:
            self.bar.write(line, file=self.stream)

    def close(self):
        self.bar.close()
        self.metrics.close()


def prune_metrics(path: Path, step: int, evaluated: bool):
    """On resume, drop the records that the interrupted run wrote after its saved state, so the
    file reads as one uninterrupted run."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        it = rec.get("iter", -1)
        if it < step or (it == step and evaluated and "val_loss" in rec):
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)


class GracefulInterrupt:
    """The first Ctrl-C asks the loop to stop at the end of the current step (so the saved state
    is consistent); a second one interrupts at once."""

    def __init__(self, say):
        self.requested, self.say, self.old = False, say, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("interrupt: finishing this step and saving; press Ctrl-C again to abort without saving")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


class Objective:
    """What a training step minimizes. This base class is plain language modelling: the mean
    next-token cross-entropy of the model on the batch. A subclass may change

    - the loss and its gradients (`loss_and_grads`),
    - a new run's tokenizer and starting weights (`new_tokenizer`, `init_params`),
    - trainable tensors of its own (`extra`, name -> array, e.g. a projection), which AdamW
      updates with the model's and the resume state keeps, but ckpt.safetensors does not: the
      model checkpoint stays an ordinary minigpt checkpoint,
    - what it records: `meta()` goes into every checkpoint's metadata.
    """

    name = "lm"

    def __init__(self):
        self.extra: dict[str, np.ndarray] = {}

    def new_tokenizer(self, text: str) -> CharTokenizer:
        return CharTokenizer.from_text(text)

    def init_params(self, config: GPTConfig, seed: int, dtype) -> dict:
        return init_params(config, seed, dtype)

    def prepare(self, config: GPTConfig, tokenizer: CharTokenizer, seed: int, dtype):
        """Called once the model is known (new, fine-tuned or resumed), before the first step:
        check it fits the objective and create the extra tensors."""

    def loss_and_grads(self, config: GPTConfig, params, x, y, rng, dloss: float):
        """One micro-batch: (loss, grads, logs). grads holds every parameter's gradient and every
        extra tensor's, all scaled by dloss; logs holds floats to record next to the loss."""
        _, loss, cache = gpt_forward(config, params, x, y, rng=rng)
        return loss, gpt_backward(cache, dloss=dloss), {}

    def meta(self) -> dict:
        return {}


def _check_model_overrides(config: GPTConfig, overrides: dict, where: str, allowed=("dropout",)) -> GPTConfig:
    """Model fields given for a run that starts from a checkpoint must agree with it, except the
    ones that change no shape (dropout)."""
    changes = {}
    for name, value in overrides.items():
        if value is None or getattr(config, name) == value:
            continue
        if name not in allowed:
            raise InputError(f"{name}={value!r} does not fit {where}, which has {name}={getattr(config, name)!r}")
        changes[name] = value
    return config.replace(**changes)


def _save_extra_state(path: Path, extra: dict, optimizer: AdamW, step: int):
    """The objective's own tensors and their AdamW moments, next to resume.safetensors."""
    tensors = {}
    for name, a in extra.items():
        tensors[name], tensors["optim.m." + name], tensors["optim.v." + name] = a, optimizer.m[name], optimizer.v[name]
    save_tensors(path, tensors, {"step": step})


def _load_extra_state(path: Path, extra: dict, optimizer: AdamW, step: int):
    """Restore what _save_extra_state wrote, in place, checking it belongs to the same step."""
    if not path.is_file():
        raise InputError(f"{path} not found: this run's objective trains tensors of its own and needs it to resume")
    tensors, meta = load_tensors(path)
    if meta.get("step") != step:
        raise InputError(f"{path} is from iter {meta.get('step')}, the resume state from iter {step}; "
                         "they were not written together (a crash between the two writes?)")
    for name, a in extra.items():
        for key, target in ((name, extra), ("optim.m." + name, optimizer.m), ("optim.v." + name, optimizer.v)):
            stored = tensors.get(key)
            if stored is None or stored.shape != a.shape or stored.dtype != a.dtype:
                raise InputError(f"{path}: tensor {key} is missing or does not fit ({a.shape}, {a.dtype})")
            target[name][...] = stored


def train(tc: TrainConfig, model_config: dict | None = None, stream=None, quiet: bool = False,
          objective: Objective | None = None, dp=None) -> dict:
    """Train a model and return a summary dict (final losses, timings, paths).

    model_config: GPTConfig fields for a new model (vocab_size defaults to the data's). With
    tc.resume or tc.init_from the model comes from the checkpoint, and any field given here must
    agree with it (dropout may change). objective: what each step minimizes (default: the
    model's cross-entropy, `Objective()`). dp: this rank of a data-parallel run (parallel.py
    starts it when tc.data_parallel; every `dp` line below is a hook of that mode)."""
    from .compress.prune import training_pruner

    if tc.data_parallel and dp is None:
        from .parallel import run_data_parallel

        return run_data_parallel(train, tc, model_config, stream, quiet, objective)
    is_root = dp is None or dp.is_root  # data-parallel: only rank 0 logs, evaluates and writes files
    stream = stream or sys.stdout
    if tc.qat and objective is not None:
        raise InputError(f"--qat trains with its own objective; it cannot be combined with {objective.name}")
    if tc.qat:
        from .compress.quantize import qat_objective

        objective = qat_objective(tc.qat)
    objective = objective or Objective()
    model_config = dict(model_config or {})
    out_dir = prepare_out_dir(tc.out_dir)
    text = load_text(tc.data) if tc.data else default_corpus()

    step, evaluated, best_val = 0, False, math.inf
    if tc.resume:
        state_path = resume_path(out_dir)
        ck = load_checkpoint(state_path)
        if not ck.optim or "step" not in ck.meta:
            raise InputError(f"{state_path} holds no optimizer state to resume from")
        config = _check_model_overrides(ck.config, model_config, str(state_path), allowed=())
        tokenizer, params = ck.tokenizer, ck.params
        objective.prepare(config, tokenizer, tc.seed, params[next(iter(params))].dtype)
        optimizer = AdamW({**params, **objective.extra}, tc.beta1, tc.beta2, ADAM_EPS, tc.weight_decay)
        optimizer.m.update(ck.optim["m"])
        optimizer.v.update(ck.optim["v"])
        optimizer.t = ck.meta["optim_t"]
        if objective.extra:
            _load_extra_state(out_dir / RESUME_EXTRA_NAME, objective.extra, optimizer, ck.meta["step"])
        step, evaluated, best_val = ck.meta["step"], ck.meta["evaluated"], ck.meta["best_val_loss"]
        if is_root:
            prune_metrics(out_dir / METRICS_NAME, step, evaluated)
    else:
        if tc.init_from:
            ck = load_checkpoint(tc.init_from)
            config = _check_model_overrides(ck.config, model_config, str(tc.init_from))
            tokenizer = ck.tokenizer
            params = {name: p.astype(tc.dtype) for name, p in ck.params.items()}
        else:
            tokenizer = objective.new_tokenizer(text)
            vocab_size = model_config.pop("vocab_size", None) or tokenizer.vocab_size
            if vocab_size < tokenizer.vocab_size:
                raise InputError(f"vocab_size {vocab_size} is smaller than the text's {tokenizer.vocab_size} characters")
            config = GPTConfig(vocab_size=vocab_size, **model_config)
            params = objective.init_params(config, tc.seed, tc.dtype)
        objective.prepare(config, tokenizer, tc.seed, np.dtype(tc.dtype))
        optimizer = AdamW({**params, **objective.extra}, tc.beta1, tc.beta2, ADAM_EPS, tc.weight_decay)
        if is_root:
            (out_dir / METRICS_NAME).unlink(missing_ok=True)  # a new run starts a new log

    trainable = {**params, **objective.extra}  # the same arrays: AdamW updates them in place
    if dp is not None:  # every rank starts from rank 0's state
        shared = dp.broadcast_state(trainable, optimizer, {"step": step, "evaluated": evaluated, "best_val": best_val})
        step, evaluated, best_val = shared["step"], shared["evaluated"], shared["best_val"]
    # pruning (compress/prune.py): gradual (--prune-to), or the zeros of a pruned checkpoint kept at 0
    pruner = training_pruner(tc, params, ck.meta if (tc.resume or tc.init_from) else None, step)
    ids = tokenizer.encode(text)  # with --init-from, new text must use the checkpoint's characters
    train_ids, val_ids = split(ids, config.block_size)
    B, T, accum = tc.batch_size, config.block_size, tc.gradient_accumulation_steps
    tokens_per_iter = B * T * accum
    meta_base = {"train_config": dataclasses.asdict(tc), "seed": tc.seed,
                 "rng": "numpy default_rng([seed, step, stream]); streams 0 batches, 1 dropout, 2 eval",
                 **objective.meta(), **(pruner.meta() if pruner else {})}
    ckpt_path, state_path = out_dir / CKPT_NAME, out_dir / RESUME_NAME

    def save_state():
        meta = dict(meta_base, kind="resume", step=step, evaluated=evaluated, best_val_loss=best_val, optim_t=optimizer.t)
        m = {n: optimizer.m[n] for n in params}
        v = {n: optimizer.v[n] for n in params}
        if objective.extra:  # written first: a crash between the two writes is caught on resume (step mismatch)
            _save_extra_state(out_dir / RESUME_EXTRA_NAME, objective.extra, optimizer, step)
        save_checkpoint(state_path, config, params, tokenizer, meta, {"m": m, "v": v})

    def diverged(what: str, at: int) -> str:
        last = f"from iter {saved_step}" if saved_step is not None else "none written by this run"
        return (f"{what} at iter {at}; stopped without saving. The last good checkpoint ({last}) is intact in "
                f"{out_dir}; try a lower --learning-rate (now {tc.learning_rate}) or a smaller --grad-clip")

    if is_root:
        reporter = Reporter(out_dir / METRICS_NAME, stream, tc.max_iters, min(step, tc.max_iters), quiet)
    else:
        from .parallel import SilentReporter

        reporter = SilentReporter()
    if pruner and tc.prune_to > 0 and tc.prune_end > tc.max_iters:
        reporter.say(f"note: --prune-end {tc.prune_end} is after --max-iters {tc.max_iters}: this run stops before "
                     f"sparsity {tc.prune_to} and writes no best checkpoint (continue it with --resume --max-iters)")
    n_params = num_params(params)
    reporter.say(f"model: {n_params:,} parameters, {config.n_layer} layers, {config.n_head} heads, "
                 f"{config.n_embd} channels, vocab {config.vocab_size}, block {T}, {tc.dtype}; "
                 f"data: {len(train_ids):,} train / {len(val_ids):,} val tokens")
    step_ms, last_eval, saved_step, interrupted = [], {}, None, False
    try:
        with GracefulInterrupt(reporter.say) as interrupt:
            if dp is not None:  # stop on a Ctrl-C only when every rank knows of it (after an Allreduce)
                from .parallel import SyncedInterrupt

                interrupt = dp.interrupt = SyncedInterrupt(interrupt)
            while True:
                if not evaluated and (step % tc.eval_interval == 0 or step == tc.max_iters) and not interrupt.requested:
                    if dp is not None:
                        dp.check_in_sync(trainable, step)
                    if not is_root:
                        evaluated, saved_step = True, step
                        continue
                    rng = step_rng(tc.seed, step, STREAM_EVAL)
                    train_loss = estimate_loss(config, params, train_ids, B, T, tc.eval_iters, rng)
                    val_loss = estimate_loss(config, params, val_ids, B, T, tc.eval_iters, rng)
                    last_eval = {"iter": step, "train_loss": train_loss, "val_loss": val_loss}
                    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                        raise TrainingError(diverged(f"the evaluated loss became {val_loss}", step))
                    reporter.record(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}", **last_eval)
                    evaluated = True
                    if val_loss < best_val and (pruner is None or pruner.ready(step)):  # pruned: final masks only
                        best_val = val_loss
                        save_checkpoint(ckpt_path, config, params, tokenizer, dict(meta_base, kind="best", **last_eval),
                                        encoded=pruner.encoded(params) if pruner else None)  # zeros stored compressed
                    save_state()
                    saved_step = step
                if step >= tc.max_iters or interrupt.requested:
                    interrupted = interrupt.requested and step < tc.max_iters
                    break

                t0 = time.perf_counter()
                lr = tc.learning_rate
                if tc.decay_lr:
                    lr = get_lr(step, tc.learning_rate, tc.warmup_iters, tc.lr_decay_iters, tc.min_lr)
                batch_rng, dropout_rng = step_rng(tc.seed, step, STREAM_BATCH), step_rng(tc.seed, step, STREAM_DROPOUT)
                if dp is not None and not is_root:  # its own dropout masks (rank 0 draws the single-process ones)
                    dropout_rng = np.random.default_rng([tc.seed, step, STREAM_DROPOUT, dp.rank])
                loss, grads, logs = 0.0, None, {}
                for _ in range(accum):
                    x, y = get_batch(train_ids, B, T, batch_rng)
                    share = 1.0
                    if dp is not None:  # this rank's rows of the global batch, and its share n_r / N of the targets
                        x, y, share = dp.shard(x, y)
                    # the mean over micro-batches: each one's gradients are scaled by 1 / accum
                    micro_loss, micro_grads, micro_logs = objective.loss_and_grads(
                        config, params, x, y, dropout_rng, share / accum)
                    grads = micro_grads if grads is None else {n: grads[n] + g for n, g in micro_grads.items()}
                    loss += share * micro_loss / accum
                    for k, val in micro_logs.items():
                        logs[k] = logs.get(k, 0.0) + share * val / accum
                if dp is not None:  # ONE Allreduce: the sum over ranks of the shares is the global batch's
                    grads, loss, logs = dp.allreduce(grads, loss, logs, step)
                if pruner:
                    pruner.mask_grads(grads)  # pruned weights get no gradient, nor a share of the clipping norm
                norm = clip_grad_norm(grads, tc.grad_clip)  # on the summed gradients: the same on every rank
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    raise TrainingError(diverged(f"the loss became {loss} (gradient norm {norm})", step))
                optimizer.step(trainable, grads, lr)
                if pruner:
                    pruner.after_step(step + 1, params, optimizer)  # masks reapplied to weights and AdamW moments
                dt = time.perf_counter() - t0
                step_ms.append(dt * 1000)
                if step % tc.log_interval == 0:
                    reporter.record(
                        f"iter {step}: loss {loss:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                        f"{tokens_per_iter / dt:,.0f} tokens/s",
                        iter=step, loss=loss, lr=lr, ms_per_iter=dt * 1000, tokens_per_s=tokens_per_iter / dt,
                        grad_norm=norm, **logs,
                    )
                step += 1
                evaluated = False
                reporter.bar.update(1)
            if saved_step != step and is_root:
                save_state()
    finally:
        reporter.close()
    if interrupted and is_root:
        print(f"interrupted at iter {step}: state saved to {state_path}; continue with --resume", file=sys.stderr)
    return {
        "iter": step,
        "interrupted": interrupted,
        "train_loss": last_eval.get("train_loss"),
        "val_loss": last_eval.get("val_loss"),
        "best_val_loss": best_val,
        "median_ms_per_iter": statistics.median(step_ms) if step_ms else None,
        "tokens_per_s": tokens_per_iter / (statistics.median(step_ms) / 1000) if step_ms else None,
        "params": n_params,
        "ckpt": str(ckpt_path),
        "resume": str(state_path),
        "metrics": str(out_dir / METRICS_NAME),
    }
