"""How long an estimate asked during a training waits: one worker, a real model.

    python bench/bench_quick_lane.py --model /work/models/e5-small [--tree OTHER_CHECKOUT]

A worker (``embedgen worker``, from ``--tree``'s code: compare two checkouts) trains a head
run on ``--rows`` reviews of waimai_10k (every n-th: both labels); once it runs, the Matrix page's
estimate of the model's default matrix is queued. Prints when the estimate finished and when
the training did, in seconds from the estimate's submit. Before the quick lane the estimate
waited for the whole training.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "classification" / "waimai_10k.csv"

SCRIPT = r"""
import dataclasses, json, sys, time
from pathlib import Path
from embedgen import jobs, tasks
from embedgen.data import prepare
from embedgen.jobrecord import read_job
from embedgen.matrix import MatrixOptions
from embedgen.paths import new_run_folder, runs_dir
from embedgen.runs import RunStatus
from embedgen.table import read_table
from embedgen.train import FinetuneConfig

model, data_path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
table = read_table(data_path)
data = prepare(table, "review", "label")
pick = list(range(0, len(data), max(1, len(data) // rows)))[:rows]  # both labels (sorted file)
data = dataclasses.replace(
    data,
    texts=tuple(data.texts[i] for i in pick),
    labels=tuple(data.labels[i] for i in pick),
    rows=tuple(data.rows[i] for i in pick),
)
config = FinetuneConfig(epochs=3, device="cpu")
folder = new_run_folder("waimai", str(config.strategy), runs_dir())
jobs.submit(jobs.TrainRequest(model, str(folder), config.as_dict(), allow_download=False), data)
while jobs.run_status(folder) is not RunStatus.RUNNING:
    time.sleep(0.2)
time.sleep(2.0)  # well into the training
source = tasks.Source(model=model, allow_download=False)
request = tasks.MatrixRequest(source, MatrixOptions(method="contextual", cjk_only=True))
asked = time.monotonic()
estimate = tasks.submit("estimate", request)
estimate_done = training_done = None
while estimate_done is None or training_done is None:
    if estimate_done is None and not read_job(estimate.folder).status.active:
        estimate_done = time.monotonic() - asked
    status = jobs.run_status(folder)
    if training_done is None and (status is None or not status.active):
        training_done = time.monotonic() - asked
    time.sleep(0.2)
print(json.dumps({"estimate": estimate_done, "training": training_done,
                  "estimate_status": str(read_job(estimate.folder).status)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="embedgen-lane-"))
    env = {**os.environ, "EMBEDGEN_HOME": str(home), "PYTHONPATH": str(args.tree.resolve())}
    env.pop("EMBEDGEN_QUEUE_URL", None)
    with open(home / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "embedgen", "worker"],
            env=env,
            cwd=args.tree,  # -m and -c put the working folder first: the tree's code
            stdout=log,
            stderr=log,
        )
    try:
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, args.model, str(DATA), str(args.rows)],
            env=env,
            cwd=args.tree,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise SystemExit(out.stderr)
        print(args.tree, out.stdout.strip(), f"(in all {time.monotonic() - started:.0f} s)")
    finally:
        worker.kill()
        worker.wait()


if __name__ == "__main__":
    main()
