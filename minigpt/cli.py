"""The `minigpt` command: train, distill, sample, eval, data, bench.

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
        if f.name in skip:
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

    p = sub.add_parser("eval", help="loss, perplexity and bits per character on the whole val split")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", default=None, help="text file (default: the data the checkpoint was trained on)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("data", help="download a dataset")
    p.add_argument("name", choices=["shakespeare"])
    p.add_argument("--dir", default=None, help="where to keep it (default: $MINIGPT_CACHE or ~/.cache/minigpt)")

    p = sub.add_parser("bench", help="benchmarks")
    p.add_argument("what", choices=["kvcache"], help="kvcache: sampling tokens/s with and without the KV cache")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--json", action="store_true")
    return parser


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
    out.write(args.prompt)
    out.flush()
    for token in generate(ck.config, ck.params, prompt_ids, args.max_new_tokens, args.temperature,
                          args.top_k, args.top_p, args.seed, use_cache=args.kv_cache):
        out.write(ck.tokenizer.chars[token])
        out.flush()
    out.write("\n")
    return 0


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
    result = evaluate(ck.config, ck.params, val_ids, args.batch_size)
    result["data"] = data or "<embedded Python reference>"
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
    """Sampling speed with and without the KV cache, at the size the issue names: n_layer 6,
    n_head 6, n_embd 384, block_size 256 (random weights: speed does not depend on them)."""
    import numpy as np

    from .generate import generate
    from .model import init_params

    config = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, bias=False)
    params = init_params(config, seed=0, dtype=np.float32)
    result = {"config": config.to_dict(), "max_new_tokens": args.max_new_tokens, "prompt_tokens": 1}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        tokens = list(generate(config, params, [0], args.max_new_tokens, seed=0, use_cache=use_cache))
        dt = time.perf_counter() - t0
        result["tokens_per_s_" + ("kv_cache" if use_cache else "no_cache")] = len(tokens) / dt
    result["speedup"] = result["tokens_per_s_kv_cache"] / result["tokens_per_s_no_cache"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.max_new_tokens} new tokens, n_layer 6, n_head 6, n_embd 384, block_size 256: "
              f"{result['tokens_per_s_kv_cache']:.1f} tokens/s with the KV cache, "
              f"{result['tokens_per_s_no_cache']:.1f} without ({result['speedup']:.1f}x)")
    return 0


COMMANDS = {"train": cmd_train, "distill": cmd_distill, "sample": cmd_sample, "eval": cmd_eval, "data": cmd_data, "bench": cmd_bench}


def main(argv=None) -> int:
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
