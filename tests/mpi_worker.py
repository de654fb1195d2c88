"""One rank of a data-parallel test run, started by tests/test_parallel_mpi.py as
`mpiexec -n R python tests/mpi_worker.py SETTINGS.json`.

SETTINGS.json holds "train" (TrainConfig fields), "model" (GPTConfig fields) and optionally
"fail": {"rank": r, "at_iter": s, "how": "die" | "hang" | "raise" | "interrupt"}, which makes rank r fail in the
middle of iter s's gradient computation (after its last evaluation, before the Allreduce), or
receive a Ctrl-C (SIGINT) there. At the
end every rank writes its parameters to params_rank{r}.safetensors in the out_dir and rank 0
prints the summary as one JSON line.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

from minigpt.checkpoint import save_tensors
from minigpt.train import Objective, TrainConfig, train


class Probe(Objective):
    """The plain LM objective that keeps a reference to the parameters (to save them at the end)
    and fails on request."""

    def __init__(self, fail, rank):
        super().__init__()
        self.fail, self.rank, self.params, self.calls = fail, rank, None, 0

    def loss_and_grads(self, config, params, x, y, rng, dloss):
        self.params = params
        if self.fail and self.fail["rank"] == self.rank and self.calls == self.fail["at_iter"]:
            if self.fail["how"] == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.fail["how"] == "hang":
                time.sleep(3600)
            if self.fail["how"] == "interrupt":  # Ctrl-C on this rank only: a request to stop, not a failure
                os.kill(os.getpid(), signal.SIGINT)
                self.fail = None
                return self.loss_and_grads(config, params, x, y, rng, dloss)
            raise RuntimeError("injected failure")
        self.calls += 1  # one micro-batch per iter in these tests
        return super().loss_and_grads(config, params, x, y, rng, dloss)


def main():
    settings = json.loads(Path(sys.argv[1]).read_text())
    rank = int(os.environ.get("PMI_RANK", "0"))
    tc = TrainConfig(**settings["train"])
    probe = Probe(settings.get("fail"), rank)
    probe.calls = settings.get("start_iter", 0)
    summary = train(tc, settings["model"], stream=sys.stderr, quiet=True, objective=probe)
    save_tensors(Path(tc.out_dir) / f"params_rank{summary['rank']}.safetensors", probe.params, {})
    if summary["rank"] == 0:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
