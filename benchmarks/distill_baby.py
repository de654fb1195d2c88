"""Distillation benchmark: the baby Shakespeare teacher into two smaller students.

Teacher: the baby preset (4 layers, 4 heads, 128 channels, 2000 steps), given as a checkpoint.
Students, each trained three ways with the same data (seed 1337: the same batches in the same
order), the same 2000 steps and the same schedule as baby:
    2x128   2 layers, 4 heads, 128 channels
    4x64    4 layers, 2 heads, 64 channels (the teacher's head size, 32, so that its heads can be kept)
    scratch           the student alone on the labels (minigpt train)
    distill-random    distilled from a random start (minigpt distill --student-init random)
    distill-teacher   distilled from the teacher's blocks: every other one for 2x128, all four cut
                      to 64 channels, 2 heads and 256 MLP neurons for 4x64 (--student-init 0,1,2,3)

Reports, per run: the val loss at the last step (the 20-batch estimate train prints), the val
loss of the best checkpoint on the whole val split (minigpt eval), the fraction of the
scratch-to-teacher gap closed, parameters and wall time; and the loss curves. Writes one JSON
file (--out), which tutorials/04_distillation.py plots.

    OPENBLAS_NUM_THREADS=1 flock /tmp/minigpt-heavy.lock python benchmarks/distill_baby.py \\
        --teacher ../helpers/teacher_baby.safetensors --data ../shared/data/tinyshakespeare.txt

(OPENBLAS_NUM_THREADS=1: on a shared 2-core machine OpenBLAS's threads contend with other
processes and a step can become 50 times slower; one thread per process keeps the timings sane.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from minigpt.checkpoint import load_checkpoint
from minigpt.compress.distill import DistillConfig, distill
from minigpt.data import load_text, split
from minigpt.evaluate import evaluate
from minigpt.train import TrainConfig, preset, train

STUDENTS = {
    "2x128": {"n_layer": 2, "n_head": 4, "n_embd": 128, "init": "every-other"},
    "4x64": {"n_layer": 4, "n_head": 2, "n_embd": 64, "init": "0,1,2,3"},
}
MODES = ("scratch", "distill-random", "distill-teacher")
LOG_EVERY = 50  # training-loss points kept in the JSON (the evaluations are all kept)


def whole_val_loss(ckpt_path, text) -> float:
    ck = load_checkpoint(ckpt_path)
    _, val_ids = split(ck.tokenizer.encode(text), ck.config.block_size)
    return evaluate(ck.config, ck.params, val_ids, batch_size=32)["val_loss"]


def read_curves(metrics_path: Path) -> dict:
    evals, logs = [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            evals.append({k: rec[k] for k in ("iter", "train_loss", "val_loss")})
        elif "loss" in rec and rec["iter"] % LOG_EVERY == 0:
            logs.append({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()
                         if k in ("iter", "loss", "soft_loss", "ce_loss", "ms_per_iter")})
    return {"evals": evals, "log": logs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="benchmarks/distill_baby.json")
    ap.add_argument("--work-dir", default=None, help="where the runs write (default: a temporary directory)")
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = ap.parse_args(argv)

    text = load_text(args.data)
    teacher = load_checkpoint(args.teacher)
    model_base, train_base = preset("baby")
    train_base.update(max_iters=args.max_iters, lr_decay_iters=args.max_iters, data=args.data, seed=1337)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="distill_baby_"))
    result = {
        "teacher": {"ckpt": str(args.teacher), "params": int(sum(p.size for p in teacher.params.values())),
                    "val_loss_estimate": teacher.meta.get("val_loss"),
                    "val_loss_whole": whole_val_loss(args.teacher, text), "config": teacher.config.to_dict()},
        "settings": {"alpha": args.alpha, "temperature": args.temperature, "divergence": "kl",
                     "train": train_base, "student_base": model_base},
        "runs": {},
    }
    print(f"teacher: val loss {result['teacher']['val_loss_whole']:.4f} (whole split)", file=sys.stderr, flush=True)
    for sname in args.students:
        s = STUDENTS[sname]
        fields = dict(model_base, n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"],
                      vocab_size=teacher.config.vocab_size)
        for mode in args.modes:
            out_dir = work / f"{sname}_{mode}"
            tc = TrainConfig(**train_base, out_dir=str(out_dir))
            t0 = time.perf_counter()
            if mode == "scratch":
                summary = train(tc, fields, quiet=True)
            else:
                dc = DistillConfig(teacher=str(args.teacher), alpha=args.alpha, temperature=args.temperature,
                                   student_init="random" if mode == "distill-random" else s["init"])
                summary = distill(tc, dc, {}, fields, quiet=True)
            wall = time.perf_counter() - t0
            run = {
                "student": sname, "mode": mode, "params": summary["params"], "wall_s": wall,
                "median_ms_per_iter": summary["median_ms_per_iter"],
                "val_loss_estimate": summary["val_loss"], "best_val_loss_estimate": summary["best_val_loss"],
                "val_loss_whole": whole_val_loss(summary["ckpt"], text),
                "curves": read_curves(Path(summary["metrics"])),
            }
            result["runs"][f"{sname}/{mode}"] = run
            print(f"{sname} {mode}: val {run['val_loss_estimate']:.4f} (estimate), {run['val_loss_whole']:.4f} (whole), "
                  f"{run['params']:,} params, {wall:.0f} s", file=sys.stderr, flush=True)
            Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")  # partial results survive

    t_whole, t_est = result["teacher"]["val_loss_whole"], result["teacher"]["val_loss_estimate"]
    for sname in args.students:
        scratch = result["runs"].get(f"{sname}/scratch")
        for mode in args.modes:
            run = result["runs"][f"{sname}/{mode}"]
            if scratch and mode != "scratch":
                run["gap_closed_whole"] = (scratch["val_loss_whole"] - run["val_loss_whole"]) / (scratch["val_loss_whole"] - t_whole)
                if t_est is not None:
                    run["gap_closed_estimate"] = ((scratch["val_loss_estimate"] - run["val_loss_estimate"])
                                                  / (scratch["val_loss_estimate"] - t_est))
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")

    print(f"| student | mode | params | val loss (20-batch estimate, step {args.max_iters}) | val loss (whole split, "
          "best ckpt) | gap closed (whole) | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| teacher 4x128 | baby | {result['teacher']['params']:,} | {t_est if t_est is None else f'{t_est:.4f}'} "
          f"| {t_whole:.4f} | | |")
    for run in result["runs"].values():
        gap = run.get("gap_closed_whole")
        print(f"| {run['student']} | {run['mode']} | {run['params']:,} | {run['val_loss_estimate']:.4f} | "
              f"{run['val_loss_whole']:.4f} | {'' if gap is None else f'{gap:.0%}'} | {run['wall_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
