"""Report of a sweep: python scripts/report.py outputs/multirun/DATE/TIME_ID [OUTPUT_DIR]

Writes report.md (mean ± std over seeds per configuration; the reference, the configuration with the
highest validation accuracy; a Welch t-test of each other against it, Holm-Bonferroni corrected, and the
conclusion each corrected test supports, as sentences; a note when there are fewer than 5 seeds;
parameters, fit time, failed jobs),
report.csv, jobs.csv, val_acc.png and train_acc.png (accuracy per epoch) and test_acc.png (final
test accuracy with error bars) into the sweep dir, or OUTPUT_DIR. --train-acc-target 0.75 adds the
epochs each configuration took to reach 75% training accuracy (experiment=study_activation).
--more SWEEP_DIR adds the seeds of another sweep of the same configurations (a seed in both is refused).
"""

import argparse
import sys

from classic_cnns import ClassicCNNsError
from classic_cnns.tools.sweep_report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("output_dir", nargs="?")
    parser.add_argument(
        "--train-acc-target", type=float, metavar="ACC", help="report the epochs to this training accuracy"
    )
    parser.add_argument(
        "--more",
        action="append",
        default=[],
        metavar="SWEEP_DIR",
        help="a sweep that adds seeds to the first, e.g. the same command run later with seed=3,4 (repeatable)",
    )
    args = parser.parse_args()
    if args.train_acc_target is not None and not 0 < args.train_acc_target <= 1:
        parser.error(f"--train-acc-target is an accuracy in (0, 1], got {args.train_acc_target}")
    try:
        out = write_report(args.sweep_dir, args.output_dir, args.train_acc_target, tuple(args.more))
    except (ClassicCNNsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print((out / "report.md").read_text())
    print(f"written to {out}")


if __name__ == "__main__":
    main()
