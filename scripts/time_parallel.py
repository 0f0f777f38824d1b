"""Wall time of a multirun with jobs one at a time vs several at once, as repeated, interleaved
runs of `python train.py` (median and min-max of each way, and the ratio of the medians).

    python scripts/time_parallel.py sweep --repeats 5    # 12-job LeNet-5 sweep: sequential vs parallel n_jobs=2
    python scripts/time_parallel.py search --repeats 5   # 12-trial search: sequential vs 4 trials at once
    python scripts/time_parallel.py sweep --tiny --repeats 1 --jobs 2   # checks the command in seconds

Both ways of a comparison run the same jobs (the same overrides, seeds and data); extra train.py
overrides follow `--`. Prepare the data once first (python scripts/prepare_data.py).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "trainer=debug",
    "trainer.detect_anomaly=false",
    "data.batch_size=32",
    "data.val_size=40",
    "data.eval_batch_size=50",
]


def commands(kind: str, jobs: int) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides every run shares, and each way's own."""
    if kind == "sweep":
        seeds = ",".join(str(seed) for seed in range(jobs))
        common = ["-m", "trainer=cpu", "trainer.max_epochs=1", f"seed={seeds}"]
        return common, {"sequential": [], "parallel n_jobs=2": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]}
    common = ["hparams_search=lenet5_optuna", f"hydra.sweeper.n_trials={jobs}", "trainer=cpu", "trainer.max_epochs=1"]
    return common, {
        "sequential": ["hydra.sweeper.n_jobs=1"],
        "4 trials at once": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=4"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["sweep", "search"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=12, help="jobs of the sweep / trials of the search")
    parser.add_argument(
        "--tiny", action="store_true", help="a few batches per job: checks the command, measures nothing"
    )
    parser.add_argument("--json", type=Path, help="write the times here")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides (after --)")
    args = parser.parse_args()
    common, ways = commands(args.kind, args.jobs)
    common += (TINY if args.tiny else []) + args.overrides
    times: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="time_parallel_") as scratch:
        for repeat in range(args.repeats):
            order = list(ways) if repeat % 2 == 0 else list(reversed(ways))  # interleaved, alternating first
            for way in order:
                sweep_dir = Path(scratch) / f"way{list(ways).index(way)}_{repeat}"
                command = [sys.executable, str(ROOT / "train.py"), *common, *ways[way], f"hydra.sweep.dir={sweep_dir}"]
                start = time.perf_counter()
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    sys.exit(f"error: {way} failed:\n{' '.join(command)}\n{done.stderr[-3000:]}")
                times[way].append(seconds)
                print(f"repeat {repeat}: {way}: {seconds:.1f} s", flush=True)
    first, second = ways
    print(f"\n{args.kind}, {args.jobs} jobs, {args.repeats} repeats: {' '.join(common)}")
    print("| way | median s | min-max s |\n|---|---|---|")
    for way, values in times.items():
        print(f"| {way} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |")
    ratio = statistics.median(times[second]) / statistics.median(times[first])
    print(f"\n{second} / {first}: {ratio:.2f} of the wall time (ratio of medians)")
    if args.json:
        args.json.write_text(
            json.dumps({"kind": args.kind, "common": common, "ways": ways, "times": times, "ratio": ratio}, indent=2)
        )


if __name__ == "__main__":
    main()
