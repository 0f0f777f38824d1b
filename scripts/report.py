"""Report of a sweep: python scripts/report.py outputs/multirun/DATE/TIME_ID [OUTPUT_DIR]

Writes report.md (mean ± std over seeds per configuration, parameters, fit time, failed jobs),
report.csv, jobs.csv, val_acc.png (validation accuracy per epoch) and test_acc.png (final test
accuracy with error bars) into the sweep dir, or OUTPUT_DIR.
"""

import argparse
import sys

from classic_cnns import ClassicCNNsError
from classic_cnns.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("output_dir", nargs="?")
    args = parser.parse_args()
    try:
        out = write_report(args.sweep_dir, args.output_dir)
    except (ClassicCNNsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print((out / "report.md").read_text())
    print(f"written to {out}")


if __name__ == "__main__":
    main()
