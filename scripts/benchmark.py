"""Time the same training three ways and write the table into docs/benchmarks.md.

    python scripts/benchmark.py experiment=lenet5_fast benchmark.target=0.99 benchmark.name="LeNet-5, MNIST"

Takes train.py's overrides. The ways (benchmark.ways): "seeds loop" (a plain PyTorch loop on a
DataLoader of PIL images through torchvision transforms, as in the seeds), "resident loop" (the
same loop on the device-resident batches) and "lightning" (train.py's path, which writes its
run dir as usual). Prints the table, writes results.json into the run dir, and replaces the
section benchmark.name of benchmark.doc (with a bar chart beside it in docs/benchmarks/).
"""

import re
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from classic_cnns.benchmark import WAYS, bar_chart, lightning_path, plain_loop, results_json, section, write_section
from classic_cnns.cli import exit_on_user_error
from classic_cnns.config import ConfigError
from classic_cnns.job import register_resolvers

COMMAND = "python scripts/benchmark.py " + shlex.join(sys.argv[1:])


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    bench = cfg.benchmark
    with exit_on_user_error():
        unknown = [way for way in bench.ways if way not in WAYS]
        if unknown:
            raise ConfigError(f"benchmark.ways has {unknown}: use some of {list(WAYS)}")
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup()
        epochs, results = cfg.trainer.max_epochs, []
        for way in bench.ways:
            if way == "lightning":
                cfg.trainer.limit_train_batches = bench.max_batches
                cfg.trainer.check_val_every_n_epoch = 1  # like the loops: validation after every epoch
                results.append(lightning_path(cfg))
            else:
                resident = way == "resident loop"
                results.append(plain_loop(cfg, datamodule, resident, epochs, bench.max_batches, bench.workers))
            print(results[-1])
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "results.json").write_text(results_json(results))
    if bench.doc:
        doc = Path(hydra.utils.to_absolute_path(bench.doc))
        slug = re.sub(r"[^a-z0-9]+", "_", bench.name.lower()).strip("_")
        chart = doc.parent / "benchmarks" / f"{slug}.png"
        bar_chart(results, bench.name, chart)
        text = section(bench.name, results, cfg, COMMAND, bench.target, chart.relative_to(doc.parent).as_posix())
        write_section(doc, bench.name, text)
        print(text)
        print(f"written to {doc}")


if __name__ == "__main__":
    register_resolvers()
    main()
