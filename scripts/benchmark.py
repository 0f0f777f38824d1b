"""Time the same training three ways, repeatedly, and write the table into docs/benchmarks.md.

    python scripts/benchmark.py experiment=lenet5_fast benchmark.target=0.99 benchmark.name="LeNet-5, MNIST"

Takes train.py's overrides. The ways (benchmark.ways): "reference loop" (a plain PyTorch loop on
a DataLoader of PIL images through torchvision transforms, as in the reference notebooks),
"resident loop" (the same loop on the device-resident batches) and "lightning" (train.py's path,
each run writing its own dir lightning_<repeat> in this run's dir). Every way runs
benchmark.repeats times (at least 5 to publish), interleaved in alternating order. Prints the
table, writes results.json and benchmark.md into the run dir, and replaces the section
benchmark.name of benchmark.doc (with a bar chart beside it in docs/benchmarks/).
"""

import re
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from classic_cnns.runs.entry_points import exit_on_user_error
from classic_cnns.runs.resolvers import register_resolvers
from classic_cnns.tools.benchmark.measure import check_settings, device_of, measure
from classic_cnns.tools.benchmark.report import bar_chart, machine, results_json, section, write_section

COMMAND = "python scripts/benchmark.py " + shlex.join(sys.argv[1:])


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    bench = cfg.benchmark
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with exit_on_user_error():
        check_settings(bench.ways, bench.repeats, bench.doc)
        results = measure(cfg, list(bench.ways), bench.repeats, bench.max_batches, bench.workers, run_dir)
    (run_dir / "results.json").write_text(results_json(results))
    doc = Path(hydra.utils.to_absolute_path(bench.doc)) if bench.doc else run_dir / "benchmark.md"
    slug = re.sub(r"[^a-z0-9]+", "_", bench.name.lower()).strip("_")
    chart = doc.parent / "benchmarks" / f"{slug}.png"
    bar_chart(results, bench.name, chart)
    machine_text = machine(device_of(cfg), str(cfg.trainer.precision))
    text = section(bench.name, results, machine_text, COMMAND, bench.target, chart.relative_to(doc.parent).as_posix())
    write_section(doc, bench.name, text)
    print(text)
    print(f"written to {doc}")


if __name__ == "__main__":
    register_resolvers()
    main()
