"""Slot utilization of a 12-trial Optuna search with 2 slots (docs/optuna_search.md).

    python scripts/measure_search_slots.py OUT_DIR CHECKOUT [CHECKOUT ...]

Runs the search once per CHECKOUT (a directory with train.py and src/, e.g. two commits
unpacked with `git archive`; give them interleaved, e.g. old new old new), each with its own
src/ first on PYTHONPATH, on the data in $CLASSIC_CNNS_DATA_DIR. Prints one JSON line per run:
sum of the trials' run times (each from its .hydra/config.yaml to its metrics.json) over
2 x the span of the trials and over 2 x the command's wall time.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SLOTS = 2
SEARCH = [
    "hparams_search=lenet5_optuna",
    "trainer=debug",
    "trainer.detect_anomaly=false",
    "data.batch_size=32",
    "data.val_size=40",
    "data.eval_batch_size=50",
    "trainer.limit_train_batches=6",
    "trainer.max_epochs=choice(1, 3, 8)",
    "hydra/sweeper/sampler=random",  # trials of unequal length
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.lower=1.01",
    "+hydra.sweeper.pruner.n_warmup_steps=4",  # every 8-epoch trial is pruned after its 5th epoch
    "hydra.sweeper.n_trials=12",
    "hydra/launcher=parallel",
    f"hydra.launcher.n_jobs={SLOTS}",
    f"hydra.sweeper.n_jobs={SLOTS}",
]


def measure(checkout: Path, sweep: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    start = time.time()
    done = subprocess.run(
        [sys.executable, str(checkout / "train.py"), *SEARCH, f"hydra.sweep.dir={sweep}"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.time() - start
    (sweep / "console.txt").write_text(done.stdout + done.stderr)
    jobs = [job for job in sweep.iterdir() if job.name.isdigit()]
    spans = [((job / ".hydra" / "config.yaml").stat().st_mtime, (job / "metrics.json").stat().st_mtime) for job in jobs]
    busy = sum(end - begin for begin, end in spans)
    span = max(end for _, end in spans) - min(begin for begin, _ in spans)
    epochs = [json.loads((job / "metrics.json").read_text())["epochs"] for job in jobs]
    return {
        "checkout": str(checkout),
        "rc": done.returncode,
        "trials": len(jobs),
        "epochs": sum(epochs),
        "busy_s": round(busy, 1),
        "span_s": round(span, 1),
        "wall_s": round(wall, 1),
        "utilization_span": round(busy / (SLOTS * span), 3),
        "utilization_wall": round(busy / (SLOTS * wall), 3),
        "load_average": os.getloadavg()[0],
    }


if __name__ == "__main__":
    out = Path(sys.argv[1]).resolve()
    for run, checkout in enumerate(sys.argv[2:]):
        print(json.dumps(measure(Path(checkout).resolve(), out / f"{run}_{Path(checkout).name}")), flush=True)
