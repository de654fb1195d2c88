"""Data-parallel benchmark: training tokens/s with 1 and 2 MPI ranks, and the time of one Allreduce
of the gradients, on the `small` bench preset (6 layers, 6 heads, 384 channels, block 256, global
batch 8, float32, no bias: `minigpt bench`'s "small").

Runs, alternating, `--repeats` times each (every run: `--steps` training steps on tiny Shakespeare,
evaluation only at the first and last step with one batch):

    single      minigpt train                                   one process, all cores' threads
    dp1         mpiexec -n 1 minigpt train --data-parallel      the MPI path with one rank
    dp2         mpiexec -n 2 minigpt train --data-parallel      two ranks, each cores // 2 threads

tokens/s = global batch tokens (8 x 256) / the median step time over the steps after the first two
(the first compiles and warms up), read from metrics.jsonl; a step includes the Allreduce. Then,
under `mpiexec -n 2`, one Allreduce of a float32 buffer the size of the small model's gradients
(the buffer the training step reduces), timed after a barrier; and the whole hook (copying the
gradients into the buffer + the Allreduce), median of `--allreduce-repeats`.

    flock /tmp/minigpt-heavy.lock python benchmarks/data_parallel.py \\
        --data ../shared/data/tinyshakespeare.txt --out benchmarks/data_parallel.json

Needs the mpi extra (pip install 'minigpt[mpi]'). The 1-minute load average before each run is
recorded: on a shared machine a busy neighbour slows any run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, bias=False, dropout=0.0)
BATCH = 8
WARMUP_STEPS = 2  # left out of the median: the first step compiles, the second still warms caches


def mpiexec() -> str:
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if found is None:
        sys.exit("no mpiexec: pip install 'minigpt[mpi]'")
    return found


def train_args(data, out_dir, steps) -> list[str]:
    args = ["train", "--data", str(data), "--out-dir", str(out_dir), "--dtype", "float32",
            "--batch-size", str(BATCH), "--max-iters", str(steps), "--eval-interval", str(10 * steps),
            "--eval-iters", "1", "--log-interval", "1", "--warmup-iters", "0", "--learning-rate", "3e-4"]  # fmt: skip
    for k, v in MODEL.items():
        flag = "--" + k.replace("_", "-")
        args += [flag if v is not False else "--no-" + k.replace("_", "-")] if isinstance(v, bool) else [flag, str(v)]
    return args


def one_run(kind: str, data, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cli = [sys.executable, "-m", "minigpt", *train_args(data, Path(tmp) / "out", steps)]
        cmd = cli if kind == "single" else [mpiexec(), "-n", kind[-1], *cli, "--data-parallel"]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        logs = [json.loads(line) for line in (Path(tmp) / "out" / "metrics.jsonl").read_text().splitlines()]
    ms = [r["ms_per_iter"] for r in logs if "ms_per_iter" in r and r["iter"] >= WARMUP_STEPS]
    median = statistics.median(ms)
    return {"kind": kind, "median_ms_per_iter": median, "tokens_per_s": BATCH * MODEL["block_size"] / median * 1000,
            "steps_timed": len(ms), "wall_s": wall, "load_avg_1min_before": load}


def allreduce_worker(repeats: int):
    """Under mpiexec -n 2: time the Allreduce of the small model's gradient buffer."""
    import numpy as np
    from mpi4py import MPI

    from minigpt.config import GPTConfig
    from minigpt.model import init_params
    from minigpt.parallel import DataParallel

    comm = MPI.COMM_WORLD
    params = init_params(GPTConfig(vocab_size=65, **MODEL), seed=0, dtype=np.float32)
    grads = {n: np.full_like(p, comm.rank + 1.0) for n, p in params.items()}
    dp = DataParallel(comm, timeout=600)
    n = sum(g.size for g in grads.values()) + 2  # the buffer train() reduces: gradients, loss, Ctrl-C flag
    buf = np.ones(n, dtype=np.float32)
    raw, hook = [], []
    for i in range(repeats + 3):  # 3 untimed first
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        t1 = time.perf_counter()
        comm.Barrier()
        t2 = time.perf_counter()
        summed, _, _ = dp.allreduce(grads, 0.0, {}, i)  # copy into the flat buffer + Allreduce
        t3 = time.perf_counter()
        if i >= 3:
            raw.append((t1 - t0) * 1000)
            hook.append((t3 - t2) * 1000)
    assert all(np.all(v == comm.size * (comm.size + 1) / 2) for v in summed.values())  # 1 + 2: really summed
    dp.close()
    times = np.array(comm.allgather((statistics.median(raw), statistics.median(hook))))
    if comm.rank == 0:  # the slower rank's median: the step waits for it
        print(json.dumps({"floats": n, "mib": n * 4 / 2**20, "ranks": comm.size,
                          "allreduce_ms_median": float(times[:, 0].max()),
                          "hook_ms_median": float(times[:, 1].max()), "repeats": repeats}))  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="tiny Shakespeare")
    ap.add_argument("--out", default="benchmarks/data_parallel.json")
    ap.add_argument("--steps", type=int, default=12, help="training steps per run (default 12)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration, alternating (default 2)")
    ap.add_argument("--allreduce-repeats", type=int, default=20)
    ap.add_argument("--worker", choices=["allreduce"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return allreduce_worker(args.allreduce_repeats)

    runs = []
    for r in range(args.repeats):
        for kind in ("single", "dp1", "dp2"):
            runs.append(one_run(kind, args.data, args.steps))
            print(f"repeat {r}: {kind}: {runs[-1]['tokens_per_s']:,.0f} tokens/s "
                  f"({runs[-1]['median_ms_per_iter']:.0f} ms/step)", file=sys.stderr, flush=True)  # fmt: skip
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, __file__, "--data", args.data, "--worker", "allreduce",
                          "--allreduce-repeats", str(args.allreduce_repeats)],
                         check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout  # fmt: skip
    allreduce = json.loads(out.strip().splitlines()[-1])
    best = {kind: max(r["tokens_per_s"] for r in runs if r["kind"] == kind) for kind in ("single", "dp1", "dp2")}
    result = {
        "model": MODEL, "global_batch": BATCH, "dtype": "float32", "steps_per_run": args.steps,
        "cores": len(os.sched_getaffinity(0)), "runs": runs, "best_tokens_per_s": best,
        "speedup_dp2_over_single": best["dp2"] / best["single"], "speedup_dp2_over_dp1": best["dp2"] / best["dp1"],
        "allreduce": allreduce,
        "command": "flock /tmp/minigpt-heavy.lock python benchmarks/data_parallel.py --data DATA",
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"tokens/s (best of {args.repeats}): single {best['single']:,.0f}, 1 rank {best['dp1']:,.0f}, "
          f"2 ranks {best['dp2']:,.0f} ({result['speedup_dp2_over_single']:.2f}x); one Allreduce of "
          f"{allreduce['mib']:.1f} MiB: {allreduce['allreduce_ms_median']:.1f} ms (with the copy into the buffer: "
          f"{allreduce['hook_ms_median']:.1f} ms); wrote {args.out}", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
