"""Every GPU check and benchmark in one command, and a summary against the targets.

    python scripts/gpu_acceptance.py            # on a CUDA machine: measures, writes docs/benchmarks.md
    python scripts/gpu_acceptance.py --dry      # without CUDA (the default there): tiny sizes on the CPU

See classic_cnns/tools/acceptance.py for the steps. Exits non-zero when a check failed; a target that
is missed is reported in the summary, not as a failure.
"""

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

import torch

from classic_cnns.tools.acceptance import ROOT, Acceptance
from classic_cnns.runs.resolvers import register_resolvers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (the default without CUDA)")
    parser.add_argument("--data-dir", default=os.environ.get("CLASSIC_CNNS_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--out", default=None, help="run dirs (default: outputs/acceptance/DATE_TIME)")
    parser.add_argument("--doc", default=None, help="where the sections go (default: docs/benchmarks.md; dry: OUT/benchmarks.md)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each benchmark way (default 5; dry 1)")
    args = parser.parse_args()
    dry = args.dry or not torch.cuda.is_available()
    out = Path(args.out or ROOT / "outputs" / "acceptance" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    doc = Path(args.doc) if args.doc else out / "benchmarks.md" if dry else ROOT / "docs" / "benchmarks.md"
    register_resolvers()
    acceptance = Acceptance(out, Path(args.data_dir).resolve(), doc.resolve(), dry, args.repeats or (1 if dry else 5))
    passed = acceptance.all()
    print(f"sections written to {doc}; run dirs in {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
