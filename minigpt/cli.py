"""The `minigpt` command: train, distill, sample, eval, data, bench, reference, prune, quantize, assignment.

Contract (scripts rely on it):
- every GPTConfig and TrainConfig field is a flag of the same name with dashes (--n-layer,
  --batch-size, ...); a preset sets defaults, and flags override the preset;
- commands that report figures take --json and then print one JSON object on stdout;
- exit status 0 on success, 2 on bad input (one line on stderr), 1 on anything else, 130 when
  training is interrupted with Ctrl-C (after saving its state).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from .config import GPTConfig
from .errors import InputError

FIELD_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "str | None": str}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit 2 (argparse prints the whole usage by default)."""
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_dataclass_flags(parser, cls, skip=()):
    """One flag per field, default None so we can tell which flags were given."""
    group = parser.add_argument_group(f"{cls.__name__} fields (override the preset)")
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:  # e.g. GPTConfig's per-layer widths
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = FIELD_TYPES[str(f.type)]
        help_text = f"default {f.default!r}"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(), help=help_text)


def given(args, cls, skip=()) -> dict:
    """The fields of cls that were given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def build_parser() -> Parser:
    from .train import DEFAULT_PRESET, PRESETS, TrainConfig

    parser = Parser(prog="minigpt", description="A GPT-2-style transformer in NumPy with hand-written backprop.")
    parser.add_argument("--version", action="version", version=f"minigpt {__import__('minigpt').__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (default: the baby preset on the embedded Python reference text)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"starting values for every field (default {DEFAULT_PRESET})")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout (log lines go to stderr)")
    add_dataclass_flags(p, GPTConfig)
    add_dataclass_flags(p, TrainConfig, skip=("resume",))
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its resume.safetensors")

    add_distill_parser(sub)

    p = sub.add_parser("sample", help="generate text from a checkpoint, streamed to stdout")
    p.add_argument("--ckpt", required=True, help="checkpoint file (e.g. out/ckpt.safetensors)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline); a prompt longer than "
                   "block_size keeps its last block_size characters")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    p.add_argument("--top-p", type=float, default=None, help="in (0, 1]: nucleus sampling")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--no-kv-cache", dest="kv_cache", action="store_false", help="recompute the whole context per token")
    add_int8_flags(p)

    p = sub.add_parser("eval", help="loss, perplexity and bits per character on the whole val split")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", default=None, help="text file (default: the data the checkpoint was trained on)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_int8_flags(p)

    p = sub.add_parser("data", help="download a dataset")
    p.add_argument("name", choices=["shakespeare"])
    p.add_argument("--dir", default=None, help="where to keep it (default: $MINIGPT_CACHE or ~/.cache/minigpt)")

    p = sub.add_parser("bench", help="training-step speed of both backends and PyTorch, side by side")
    p.add_argument("what", nargs="?", choices=["train", "kvcache"], default="train",
                   help="train (default): ms per training step, GFLOP/s, where the step goes, sampling "
                   "tokens/s; kvcache: sampling tokens/s with and without the KV cache")
    p.add_argument("--presets", nargs="+", default=["baby", "small"], metavar="NAME", help="baby and/or small")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (kvcache: with and without the cache), alternating (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation first (default 1)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed run (default: baby 10, small 2)")
    p.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch twin")
    p.add_argument("--sample-tokens", type=int, default=200, help="new tokens for the sampling figure")
    p.add_argument("--out", default="bench.json", help="where to write the JSON results (default bench.json)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="kvcache: new tokens to generate")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")

    add_reference_parser(sub)
    add_prune_parser(sub)
    add_quantize_parser(sub)
    add_assignment_parser(sub)
    return parser


def add_int8_flags(p):
    p.add_argument("--int8", nargs="?", const="dynamic", choices=["dynamic", "static"], default=None,
                   help="run every linear layer in int8 (integer-only inference): int8 activations per token "
                   "(dynamic, the default) or per tensor from calibration (static)")
    p.add_argument("--smooth-alpha", type=float, default=None, help="with --int8: SmoothQuant with this alpha")
    p.add_argument("--calib-data", default=None, help="with --int8 static or --smooth-alpha: calibration text "
                   "(default: the checkpoint's training data); its first windows are used")


def add_quantize_parser(sub):
    """`minigpt quantize` and `minigpt quantize report` (minigpt/compress/quantize.py)."""
    from .compress.quantize import CLIPS, GRANULARITIES, METHODS, SCHEMES

    p = sub.add_parser("quantize", help="quantize a checkpoint's linear weights (RTN, GPTQ, k-means, llama.cpp "
                       "Q8_0/Q4_0) into a smaller checkpoint; `quantize report` shows the error per tensor")
    p.add_argument("action", nargs="?", choices=["report"], default=None,
                   help="report: per-tensor MSE, SQNR, cosine and val-loss change (nothing is written but --png)")
    p.add_argument("--ckpt", required=True, help="the float checkpoint to quantize")
    p.add_argument("--out", default=None, help="the quantized checkpoint to write (required without report)")
    p.add_argument("--method", choices=METHODS, default="rtn")
    p.add_argument("--bits", type=int, default=8, help="2..8 (k-means: 2^bits shared values; default 8)")
    p.add_argument("--group-size", type=int, default=None, help="quantize groups of G input channels "
                   "(implies --granularity group)")
    p.add_argument("--scheme", choices=SCHEMES, default="sym")
    p.add_argument("--granularity", choices=GRANULARITIES, default=None, help="default: channel (group with --group-size)")
    p.add_argument("--clip", choices=CLIPS, default="minmax", help="how the clipping range is chosen")
    p.add_argument("--override", action="append", default=[], metavar="NAME=SPEC",
                   help="mixed precision: quantize tensor NAME with SPEC (w8, w4g32, w3-affine, ...) or keep it "
                   "float (NAME=float); repeatable")
    p.add_argument("--calib-data", default=None, help="GPTQ calibration text (default: the checkpoint's training data)")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration: this many batches of the first "
                   "windows of the text's train split (default 8)")
    p.add_argument("--calib-batch-size", type=int, default=16)
    p.add_argument("--act-order", action="store_true", help="GPTQ: quantize columns by decreasing Hessian diagonal")
    p.add_argument("--data", default=None, help="val text for --eval and report (default: the checkpoint's)")
    p.add_argument("--eval", action="store_true", help="also report the val loss before and after")
    p.add_argument("--val-batches", type=int, default=None, help="evaluate on the first N batches of 32 windows "
                   "of the val split (default: all)")
    p.add_argument("--png", default=None, help="report: also draw the loss change per tensor (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_prune_parser(sub):
    """`minigpt prune` and `minigpt prune sensitivity` (minigpt/compress/prune_command.py)."""
    from .compress.prune import METHODS

    p = sub.add_parser("prune", help="prune a checkpoint (magnitude, random, wanda, N:M, neurons, heads) into a "
                       "smaller file; `prune sensitivity`: per-tensor loss increase")
    p.add_argument("action", nargs="?", choices=["sensitivity"], default=None,
                   help="sensitivity: prune each tensor alone at --sparsities and print the val-loss increase")
    p.add_argument("--ckpt", required=True, help="the checkpoint to prune")
    p.add_argument("--out", default=None, help="where to write the pruned checkpoint")
    p.add_argument("--method", choices=METHODS, default="magnitude")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction in [0, 1) pruned; round(s*n) of n, half to even")
    p.add_argument("--scope", choices=["tensor", "global"], default="tensor", help="rank per tensor or over all of them")
    p.add_argument("--n", type=int, default=2, help="nm: keep N in every group of M input channels (default 2:4)")
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--tensors", nargs="+", default=None, metavar="NAME", help="prune these tensors only")
    p.add_argument("--include-embeddings", action="store_true", help="also prune wte and wpe")
    p.add_argument("--include-layernorm", action="store_true", help="also prune the LayerNorm weights")
    p.add_argument("--calib-data", default=None, metavar="PATH", help="text for calibration (wanda, --score loss)")
    p.add_argument("--calib-seqs", type=int, default=32, help="calibration windows from its train split (default 32)")
    p.add_argument("--score", choices=["norm", "loss"], default="norm", help="neurons/heads: rank by weight norm or "
                   "by measured loss increase on the calibration data")
    p.add_argument("--data", default=None, metavar="PATH", help="text for the val loss (and fine-tuning)")
    p.add_argument("--eval-windows", type=int, default=256, help="val windows evenly spaced over the split (default 256)")
    p.add_argument("--finetune-iters", type=int, default=0, help="fine-tune this many steps with the masks kept")
    p.add_argument("--finetune-lr", type=float, default=3e-4, help="fine-tuning peak learning rate (cosine to 1/10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9], help="sensitivity grid")
    p.add_argument("--plot", default=None, metavar="PNG", help="sensitivity: also draw the curves (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_distill_parser(sub):
    from .compress.distill import DistillConfig
    from .train import DEFAULT_PRESET, PRESETS, TrainConfig

    p = sub.add_parser("distill", help="train a small student to imitate a trained teacher (knowledge distillation)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"starting values for the training fields (default {DEFAULT_PRESET})")
    p.add_argument("--student-preset", choices=sorted(PRESETS), default=None,
                   help="starting values for the student's model fields (default: the teacher's, with half its layers)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout (log lines go to stderr)")
    add_dataclass_flags(p, DistillConfig)
    add_dataclass_flags(p, GPTConfig)
    add_dataclass_flags(p, TrainConfig, skip=("resume",))
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its resume.safetensors")


def add_reference_parser(sub):
    """`minigpt reference export|ops|check|llmc`: golden files and the checker (minigpt/reference.py)."""
    from .reference import ReferenceSettings

    ref = sub.add_parser("reference", help="golden reference files and a checker for other implementations")
    rsub = ref.add_subparsers(dest="reference_command", parser_class=Parser, metavar="ACTION", required=True)
    p = rsub.add_parser("export", help="write a whole-model golden file (inputs, params, every activation, "
                        "loss, gradients, K AdamW steps)")
    p.add_argument("out", metavar="OUT.safetensors")
    p.add_argument("--preset", choices=sorted(__import__("minigpt.train").train.PRESETS), default=None,
                   help="model fields from a training preset (default: GPTConfig's defaults); flags override it")
    add_dataclass_flags(p, GPTConfig)
    add_dataclass_flags(p, ReferenceSettings)
    p = rsub.add_parser("ops", help="write one golden file per op (linear, layernorm, attention, gelu, relu, "
                        "embedding, cross_entropy, adamw) into a directory")
    p.add_argument("out_dir", metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p = rsub.add_parser("check", help="compare a candidate file with a golden file, tensor by tensor; exit 1 "
                        "on any mismatch")
    p.add_argument("golden", metavar="GOLDEN")
    p.add_argument("candidate", metavar="CANDIDATE",
                   help="a safetensors file with the golden names, or an llm.c checkpoint or debug state")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: the dtype's table)")
    p.add_argument("--rtol", type=float, default=None,
                   help="tolerance relative to each tensor's largest magnitude (default: the dtype's table)")
    p.add_argument("--allow-missing", action="store_true",
                   help="compare only the tensors the candidate has (missing ones are listed, not failures)")
    p.add_argument("--failures-only", action="store_true", help="print only the rows that fail")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p = rsub.add_parser("llmc", help="write a golden file's parameters and first step as llm.c files "
                        "(checkpoint, magic 20240326 v3; debug state, magic 20240327 v2)")
    p.add_argument("golden", metavar="GOLDEN")
    p.add_argument("--model", required=True, metavar="MODEL.bin", help="the llm.c checkpoint to write")
    p.add_argument("--state", default=None, metavar="STATE.bin", help="the llm.c debug state to write")


def add_assignment_parser(sub):
    """`minigpt assignment list|make|grade`: the course kit (minigpt/course, docs/instructors.md)."""
    asg = sub.add_parser("assignment", help="course assignments cut out of minigpt: list, make a student copy, grade")
    asub = asg.add_subparsers(dest="assignment_command", parser_class=Parser, metavar="ACTION", required=True)
    p = asub.add_parser("list", help="the assignments, their parts, regions and points")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p = asub.add_parser("make", help="write a student copy: the package with the assignment's regions stubbed, "
                        "its grading tests and a README")
    p.add_argument("name", metavar="NAME", help="an assignment's name or number (minigpt assignment list)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory")
    p.add_argument("--hidden-tests", default=None, metavar="DIR",
                   help="test_<part>*.py files kept out of the copy; checked to pass on the reference solution")
    p = asub.add_parser("grade", help="grade a student copy, each part in its own subprocess: a score table")
    p.add_argument("dir", metavar="DIR", help="a student copy made by `minigpt assignment make`")
    p.add_argument("--hidden-tests", default=None, metavar="DIR", help="extra test_<part>*.py files to grade with")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per part before it scores 0 (default 120)")
    p.add_argument("--jobs", type=int, default=1, help="parts graded at the same time (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


# ----------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from .checkpoint import load_checkpoint
    from .train import DEFAULT_PRESET, TrainConfig, preset, resume_path, train

    train_given = given(args, TrainConfig, skip=("resume",))
    model_given = given(args, GPTConfig)
    if args.resume:
        # continue with the run's own settings; flags given now override them (e.g. --max-iters)
        stored = load_checkpoint(resume_path(train_given.get("out_dir", "out"))).meta.get("train_config", {})
        tc = TrainConfig(**{**stored, **train_given, "resume": True, "init_from": None})
        model_config = model_given
    else:
        model_preset, train_preset = preset(args.preset or DEFAULT_PRESET)
        tc = TrainConfig(**{**train_preset, **train_given})
        model_config = model_given if tc.init_from else {**model_preset, **model_given}
    log_stream = sys.stderr if args.json else sys.stdout
    summary = train(tc, model_config, stream=log_stream)
    if summary.get("rank", 0) != 0:  # --data-parallel: rank 0 alone reports
        return 130 if summary["interrupted"] else 0
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"done: best val loss {summary['best_val_loss']:.4f}; model in {summary['ckpt']}", file=log_stream)
    return 130 if summary["interrupted"] else 0


def cmd_distill(args) -> int:
    from .checkpoint import load_checkpoint
    from .compress.distill import DistillConfig, distill
    from .train import DEFAULT_PRESET, TrainConfig, preset, resume_path

    train_given = given(args, TrainConfig, skip=("resume",))
    model_given = given(args, GPTConfig)
    distill_given = given(args, DistillConfig)
    if args.resume:  # the run's own settings; flags given now override them
        stored = load_checkpoint(resume_path(train_given.get("out_dir", "out"))).meta
        tc = TrainConfig(**{**stored.get("train_config", {}), **train_given, "resume": True, "init_from": None})
        dc = DistillConfig(**{**stored.get("distill", {}), **distill_given})
        student_base = {}
    else:
        _, train_preset = preset(args.preset or DEFAULT_PRESET)
        tc = TrainConfig(**{**train_preset, **train_given})
        dc = DistillConfig(**distill_given)
        student_base = preset(args.student_preset)[0] if args.student_preset else None
    log_stream = sys.stderr if args.json else sys.stdout
    summary = distill(tc, dc, model_given, student_base, stream=log_stream)
    if summary.get("rank", 0) != 0:  # --data-parallel: rank 0 alone reports
        return 130 if summary["interrupted"] else 0
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"done: best val loss {summary['best_val_loss']:.4f} (teacher {summary['teacher_params']:,} parameters, "
              f"student {summary['params']:,}); model in {summary['ckpt']}", file=log_stream)
    return 130 if summary["interrupted"] else 0


def cmd_sample(args) -> int:
    from .checkpoint import load_checkpoint
    from .generate import check_sampling, generate

    check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    ck = load_checkpoint(args.ckpt)
    if args.prompt == "":
        raise InputError("the prompt is empty; give at least one character with --prompt")
    prompt_ids = ck.tokenizer.encode(args.prompt)  # names any character the model does not know
    out = sys.stdout
    with int8_context(args, ck):
        out.write(args.prompt)
        out.flush()
        for token in generate(ck.config, ck.params, prompt_ids, args.max_new_tokens, args.temperature,
                              args.top_k, args.top_p, args.seed, use_cache=args.kv_cache):
            out.write(ck.tokenizer.chars[token])
            out.flush()
    out.write("\n")
    return 0


def checkpoint_text(ck, path=None) -> str:
    """The text a checkpoint was trained on (or the file at path)."""
    from .data import default_corpus, load_text

    data = path or ck.meta.get("train_config", {}).get("data")
    return load_text(data) if data else default_corpus()


def int8_context(args, ck):
    """A context in which the model's linear layers run in int8 (--int8), or a no-op."""
    from contextlib import nullcontext

    if args.int8 is None:
        if args.smooth_alpha is not None:
            raise InputError("--smooth-alpha needs --int8")
        return nullcontext()
    from .compress.int8 import Int8Model, calibrate, calibration_batches, int8_inference
    from .data import split

    calib = None
    if args.int8 == "static" or args.smooth_alpha is not None:
        train_ids, _ = split(ck.tokenizer.encode(checkpoint_text(ck, args.calib_data)), ck.config.block_size)
        calib = calibrate(ck.config, ck.params, calibration_batches(train_ids, ck.config.block_size))
    return int8_inference(Int8Model(ck.params, args.int8, calib, args.smooth_alpha, ck.encoded))


def cmd_eval(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import default_corpus, load_text, split
    from .evaluate import evaluate

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    ck = load_checkpoint(args.ckpt)
    data = args.data or ck.meta.get("train_config", {}).get("data")
    text = load_text(data) if data else default_corpus()
    _, val_ids = split(ck.tokenizer.encode(text), ck.config.block_size)
    with int8_context(args, ck):
        result = evaluate(ck.config, ck.params, val_ids, args.batch_size)
    result["data"] = data or "<embedded Python reference>"
    if args.int8:
        result["int8"] = args.int8
    if args.json:
        print(json.dumps(result))
    else:
        print(f"val loss {result['val_loss']:.4f}, perplexity {result['perplexity']:.3f}, "
              f"bits per char {result['bits_per_char']:.4f} ({result['tokens']:,} tokens of {result['data']})")
    return 0


def cmd_data(args) -> int:
    from .data import download_shakespeare

    print(download_shakespeare(args.dir))
    return 0


def cmd_bench(args) -> int:
    if args.what == "kvcache":
        return bench_kvcache(args)
    from . import bench
    from .checkpoint import atomic_write_text

    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    atomic_write_text(args.out, "{}\n")  # fail now, not after minutes of timing, if it cannot be written
    out = sys.stderr if args.json else sys.stdout
    result = bench.run(args.presets, args.repeats, args.warmup,
                       {name: args.steps for name in args.presets} if args.steps else None,
                       args.torch, args.sample_tokens, say=lambda line: print(line, file=out, flush=True))  # fmt: skip
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}", file=out)
    if args.json:
        print(json.dumps(result))
    return 0


def bench_kvcache(args) -> int:
    """Sampling speed with and without the KV cache, at the size the issue names: n_layer 6,
    n_head 6, n_embd 384, block_size 256 (random weights: speed does not depend on them), on the
    current backend; runs with and without the cache alternate, medians of --repeats runs each."""
    import numpy as np

    from . import backend, bench
    from .model import init_params

    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {args.repeats}")
    config = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, bias=False)
    params = init_params(config, seed=0, dtype=np.float32)
    name = backend.get_backend()
    rate = bench.sampling_tokens_per_s(config, params, args.max_new_tokens, args.repeats, (True, False), name)
    result = {"config": config.to_dict(), "backend": name, "max_new_tokens": args.max_new_tokens,
              "prompt_tokens": 1, "repeats": args.repeats,
              "tokens_per_s_kv_cache": rate[True], "tokens_per_s_no_cache": rate[False],
              "speedup": rate[True] / rate[False]}  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.max_new_tokens} new tokens, n_layer 6, n_head 6, n_embd 384, block_size 256, {name} backend, "
              f"medians of {args.repeats} runs: {result['tokens_per_s_kv_cache']:.1f} tokens/s with the KV cache, "
              f"{result['tokens_per_s_no_cache']:.1f} without ({result['speedup']:.1f}x)")  # fmt: skip
    return 0


def cmd_reference(args) -> int:
    import numpy as np

    from . import llmc
    from . import reference as ref

    action = args.reference_command
    if action == "export":
        from .train import preset

        model_fields = preset(args.preset)[0] if args.preset else {}
        config = GPTConfig(**{**model_fields, **given(args, GPTConfig)})
        settings = ref.ReferenceSettings(**given(args, ref.ReferenceSettings))
        tensors, meta = ref.export_model(config, settings)
        ref.write_reference(args.out, tensors, meta)
        print(f"wrote {args.out}: {len(tensors)} tensors, loss {float(tensors['loss']):.6f}", file=sys.stderr)
    elif action == "ops":
        settings = ref.ReferenceSettings(seed=args.seed, dtype=args.dtype)
        for name, (tensors, meta) in ref.export_ops(settings).items():
            ref.write_reference(f"{args.out_dir}/{name}.safetensors", tensors, meta)
        print(f"wrote {len(ref.OPS)} op files to {args.out_dir}", file=sys.stderr)
    elif action == "check":
        golden, meta = ref.load_reference(args.golden)
        candidate, _ = ref.load_reference(args.candidate, ref.file_config(meta))
        for name, value in (("--atol", args.atol), ("--rtol", args.rtol)):
            if value is not None and not value >= 0:
                raise InputError(f"{name} must be >= 0, got {value}")
        report = ref.check(golden, candidate, args.atol, args.rtol, args.allow_missing)
        if args.json:
            print(json.dumps(report.to_dict()))
        else:
            print(ref.format_report(report, only_failures=args.failures_only))
        return 0 if report.ok else 1
    elif action == "llmc":
        golden, meta = ref.load_reference(args.golden)
        config = ref.file_config(meta)
        if config is None or meta.get("kind") != "model":
            raise InputError(f"{args.golden} is not a whole-model reference file (minigpt reference export)")
        params = {k.removeprefix("params."): v for k, v in golden.items() if k.startswith("params.")}
        llmc.write_model(args.model, config, params)
        if args.state:
            grads = {k.removeprefix("grads."): v for k, v in golden.items() if k.startswith("grads.")}
            llmc.write_state(args.state, config, golden["inputs"], golden["targets"], golden["acts.logits"],
                             np.float32(golden["loss"]), grads)
    return 0


def cmd_prune(args) -> int:
    from .compress import prune_command as pc

    if args.eval_windows < 1 or args.calib_seqs < 1:
        raise InputError("--eval-windows and --calib-seqs must be >= 1")
    settings = pc.PruneSettings(
        ckpt=args.ckpt, out=args.out, method=args.method, sparsity=args.sparsity, scope=args.scope, n=args.n, m=args.m,
        tensors=args.tensors, include_embeddings=args.include_embeddings, include_layernorm=args.include_layernorm,
        calib_data=args.calib_data, calib_seqs=args.calib_seqs, score=args.score, data=args.data,
        eval_windows=args.eval_windows, finetune_iters=args.finetune_iters, finetune_lr=args.finetune_lr, seed=args.seed)
    out = sys.stderr if args.json else sys.stdout
    if args.action == "sensitivity":
        result = pc.run_sensitivity(settings, args.sparsities, args.plot)
        print(pc.format_sensitivity(result), file=out)
    else:
        result = pc.run_prune(settings, say=lambda line: print(line, file=out, flush=True))
        print(pc.format_result(result), file=out)
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_assignment(args) -> int:
    from .course import kit

    action = args.assignment_command
    if action == "list":
        listing = kit.list_assignments()
        print(json.dumps(listing) if args.json else kit.format_list(listing))
    elif action == "make":
        manifest = kit.make(args.name, args.out, args.hidden_tests)
        print(f"wrote a student copy of assignment {manifest['number']} {manifest['assignment']} to {args.out} "
              f"({len(manifest['parts'])} parts, {manifest['max_points']} points)", file=sys.stderr)
    else:
        result = kit.grade(args.dir, args.hidden_tests, args.timeout, args.jobs)
        print(json.dumps(result) if args.json else kit.format_score(result))
    return 0


def cmd_quantize(args) -> int:
    import os
    import tempfile
    from pathlib import Path

    import numpy as np

    from .checkpoint import load_checkpoint, save_checkpoint
    from .compress import quantize as Q
    from .compress.int8 import calibration_batches
    from .data import iter_windows, split

    if args.action is None and not args.out:
        raise InputError("--out is required (or use `minigpt quantize report`)")
    for name in ("calib_batches", "calib_batch_size", "val_batches"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    granularity = args.granularity or ("group" if args.group_size else "channel")
    if args.group_size is not None and granularity != "group":
        raise InputError("--group-size needs --granularity group")
    spec = Q.QuantSpec(bits=args.bits, scheme=args.scheme, granularity=granularity,
                       group_size=args.group_size or 32, clip=args.clip)
    ck = load_checkpoint(args.ckpt)
    if ck.encoded:
        raise InputError(f"{args.ckpt} is already compressed; quantize the float checkpoint")
    params = {n: p.astype("float32") for n, p in ck.params.items()}
    overrides = {}
    for item in args.override:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--override {item!r} is not NAME=SPEC")
        overrides[name] = None if value.strip().lower() == "float" else Q.parse_spec(value, clip=args.clip)
    batches = None
    if args.method == "gptq":
        train_ids, _ = split(ck.tokenizer.encode(checkpoint_text(ck, args.calib_data)), ck.config.block_size)
        batches = calibration_batches(train_ids, ck.config.block_size, args.calib_batches, args.calib_batch_size)
    t0 = time.perf_counter()
    qparams, encoded = Q.quantize_model(ck.config, params, args.method, spec, batches, overrides,
                                        act_order=args.act_order)
    result = {"method": args.method, "spec": spec.name if args.method in ("rtn", "gptq") else
              (f"k-means {args.bits} bits" if args.method == "kmeans" else args.method),
              "seconds": time.perf_counter() - t0, "quantized": sorted(encoded),
              "float": [n for n in params if n not in encoded]}
    if args.method == "kmeans":  # what Huffman coding of the indices would save (reported, not stored)
        from .compress.kmeans import huffman_nbytes

        result["packed_index_bytes"] = sum(int(e.parts["idx"].nbytes) for e in encoded.values())
        result["huffman_index_bytes"] = sum(
            huffman_nbytes(Q.unpack_codes(e.parts["idx"], e.info["bits"], int(np.prod(e.info["shape"]))))
            for e in encoded.values())
    val_xy = None
    if args.eval or args.action == "report":
        _, val_ids = split(ck.tokenizer.encode(checkpoint_text(ck, args.data)), ck.config.block_size)
        val_xy = list(iter_windows(val_ids, ck.config.block_size, 32))[: args.val_batches]
        result["val_batches"] = len(val_xy)
    out = sys.stderr if args.json else sys.stdout
    if args.action == "report":
        rep = Q.report(ck.config, params, qparams, val_xy)
        result.update(rep)
        print(Q.format_report(rep), file=out)
        if args.png:
            if Q.plot_report(rep, args.png):
                print(f"wrote {args.png}", file=out)
            else:
                print("--png: matplotlib is not installed (pip install matplotlib); no plot written", file=out)
    else:
        meta = dict(ck.meta, quantization={k: result[k] for k in ("method", "spec", "quantized")}, kind="quantized")
        save_checkpoint(args.out, ck.config, qparams, ck.tokenizer, meta, encoded=encoded)
        with tempfile.TemporaryDirectory() as tmp:  # the float32 file of the same model, for the ratio
            save_checkpoint(Path(tmp) / "f.safetensors", ck.config, params, ck.tokenizer, ck.meta)
            result["float32_bytes"] = os.path.getsize(Path(tmp) / "f.safetensors")
        result["bytes"] = os.path.getsize(args.out)
        result["ratio"] = result["bytes"] / result["float32_bytes"]
        result["out"] = args.out
        if args.eval:
            result["float_val_loss"] = Q.eval_loss(ck.config, params, val_xy)
            result["val_loss"] = Q.eval_loss(ck.config, qparams, val_xy)
        line = (f"wrote {args.out}: {result['bytes']:,} bytes, {result['ratio']:.3f}x the float32 file "
                f"({result['float32_bytes']:,}); {len(encoded)} linear weights quantized ({result['spec']}), "
                f"{len(result['float'])} tensors float")
        if args.eval:
            line += f"; val loss {result['float_val_loss']:.4f} -> {result['val_loss']:.4f}"
        print(line, file=out)
    if args.json:
        print(json.dumps(result))
    return 0


COMMANDS = {"prune": cmd_prune, "quantize": cmd_quantize, "train": cmd_train, "distill": cmd_distill, "sample": cmd_sample, "eval": cmd_eval, "data": cmd_data, "bench": cmd_bench,
            "reference": cmd_reference, "assignment": cmd_assignment}


def main(argv=None) -> int:
    from .memory import keep_freed_memory

    keep_freed_memory()  # reuse freed arrays instead of page-faulting fresh memory every step (minigpt/memory.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    from .train import TrainingError

    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        print(f"minigpt: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"minigpt: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `minigpt sample ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("minigpt: interrupted", file=sys.stderr)
        return 130
