"""The GPU acceptance run: every GPU check and benchmark, in parts that fit the device's budget.

    python scripts/gpu_acceptance.py --part checks   # precision, channels_last + compile, placement, resume after a kill, per-GPU jobs, DDP
    python scripts/gpu_acceptance.py --part bench    # docs/benchmarks.md's benchmarks and candidate GPU recipes for lenet5_fast
    python scripts/gpu_acceptance.py --part sweep    # the 12-job sweep, all at once and one after another
    python scripts/gpu_acceptance.py                 # all three parts
    python scripts/gpu_acceptance.py --dry           # without CUDA (the default there): tiny sizes on the CPU

The GPU machine is lent in short windows (about 15 minutes in all, start-up included, at most 10
minutes a command). Each part has a wall-clock budget (`BUDGET_S`: 5 minutes a part, 8 for all
three): a step that would start after its part's budget is spent is reported as "not run:
budget spent" instead, so a command always ends in time with the summary of what it measured.
The plan (`PLAN`: runs and epochs per part) is printed first and checked against `MAX_EPOCHS`;
--dry checks it without running anything on a GPU. Prepare what the GPU machine needs with
scripts/prepare_gpu_bundle.sh. Exits non-zero when a check failed; a missed target is reported
in the summary, not as a failure.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from classic_cnns.runs.entry_points import compose_train_config
from classic_cnns.runs.resolvers import auto_precision, register_resolvers
from classic_cnns.runs.train import train
from classic_cnns.tools.benchmark.measure import LIGHTNING, RESIDENT_LOOP, WAYS, Result, measure
from classic_cnns.tools.benchmark.report import bar_chart, machine, median, median_ratio, section, write_section

ROOT = Path(__file__).resolve().parents[1]  # the checkout: conf/, train.py
sys.path.insert(0, str(ROOT / "scripts"))
import folder_throughput  # noqa: E402  (scripts/folder_throughput.py: the JPEG folder and the epoch it times)

# Small enough for seconds on a CPU, big enough for every step to do its real work.
DRY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.val_size=32",
    "callbacks=fast",
    "callbacks.progress_bar=null",
    "logger=csv",
    "++trainer.enable_model_summary=false",
    "++trainer.enable_progress_bar=false",
]
CHECK_EPOCHS = ["trainer.max_epochs=2"]  # the checks compare runs; two epochs show it as well as ten
# Fewer, larger steps than the CPU-chosen lenet5_fast (1 epoch of 64-image batches): a GPU's step
# costs about the same for 64 or 1024 images, so the first GPU run picks one of these by measurement.
LENET5_GPU_CANDIDATES = {
    "batch 512, 2 epochs, lr 0.4": ["data.batch_size=512", "trainer.max_epochs=2", "optimizer.lr=0.4"],
    "batch 1024, 3 epochs, lr 0.8": ["data.batch_size=1024", "trainer.max_epochs=3", "optimizer.lr=0.8"],
    "batch 2048, 4 epochs, lr 1.0": ["data.batch_size=2048", "trainer.max_epochs=4", "optimizer.lr=1.0"],
}
NO_CHECKPOINTS = ["callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null"]
AT_224 = ["model=alexnet_torchvision", "data.image_size=224", "trainer.max_epochs=2", "data.batch_size=512"]
REPEATS = 3  # of each benchmark way, interleaved (--repeats)
BUDGET_S = {"checks": 300, "bench": 300, "sweep": 300, "all": 480}


@dataclass(frozen=True)
class Planned:
    part: str
    step: str
    runs: int  # training runs (or jobs)
    epochs: int  # epochs of each run


def plan(repeats: int) -> list[Planned]:
    """What each part trains, in runs and epochs (the 224 throughput run: 40 batches an epoch)."""
    return [
        Planned("checks", "channels_last, compile", 2, 2),
        Planned("checks", "placement parity", 2, 2),
        Planned("checks", "resume after a kill", 3, 2),
        Planned("checks", "per-GPU jobs, DDP (2+ GPUs only)", 2, 10),
        Planned("bench", "lenet5_fast, 3 ways", 3 * repeats, 1),
        Planned("bench", "alexnet_fast, 3 ways", 3 * repeats, 12),
        Planned("bench", "AlexNet 224 throughput, 2 ways", 2 * repeats, 2),
        Planned("bench", "lenet5_fast GPU candidates", len(LENET5_GPU_CANDIDATES) * repeats, 4),
        Planned("bench", "JPEG decoding: workers vs the GPU", 2 * repeats, 1),
        Planned("sweep", "12-job sweep, parallel and sequential", 24, 10),
    ]


MAX_EPOCHS = {"checks": 40, "bench": 200, "sweep": 240}  # the plan's size today; growing it needs a GPU measurement


def check_plan(steps: list[Planned]) -> list[str]:
    """Parts whose planned epochs exceed MAX_EPOCHS, as messages (none: the plan fits)."""
    problems = []
    for part, limit in MAX_EPOCHS.items():
        epochs = sum(s.runs * s.epochs for s in steps if s.part == part)
        if epochs > limit:
            problems.append(
                f"part {part} plans {epochs} epochs, more than its {limit}: fewer repeats (--repeats) or runs"
            )
    return problems


def plan_table(steps: list[Planned]) -> str:
    lines = ["| part | step | runs | epochs each |", "|---|---|---|---|"]
    lines += [f"| {s.part} | {s.step} | {s.runs} | {s.epochs} |" for s in steps]
    return "\n".join(lines)


@dataclass
class Step:
    name: str
    ok: bool | None  # None: not run here, `detail` says why
    detail: str


@dataclass
class Target:
    name: str
    value: str
    ok: bool | None


class KillAtEpoch(L.Callback):
    """SIGKILL this process when epoch `epoch` starts (the checkpoints of the epochs before it are
    written): a crash with no chance to clean up, for the resume check."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordDevice(L.Callback):
    """Write the job's device (its GPU's UUID on CUDA) into device.txt of the run dir."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        name = str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else str(device)
        if trainer.is_global_zero:
            self.path.write_text(name)


class Acceptance:
    """The steps, each a method; `out` holds every run dir, `doc` gets the measured sections."""

    def __init__(self, out: Path, data_dir: Path, doc: Path, dry: bool, repeats: int, budget_s: float) -> None:
        self.out, self.data_dir, self.doc, self.dry, self.repeats = out, data_dir, doc, dry, repeats
        out.mkdir(parents=True, exist_ok=True)  # the subprocess runs start in it
        self.gpus = 0 if dry else torch.cuda.device_count()
        self.deadline = time.monotonic() + budget_s
        self.steps: list[Step] = []
        self.targets: list[Target] = []

    # --- helpers ---------------------------------------------------------------------------
    def config(self, name: str, *overrides: str) -> DictConfig:
        """train.py's config for `overrides` (plus the dry sizes), writing into out/name."""
        return compose_train_config(
            [f"paths.output_dir={self.out / name}", f"data.data_dir={self.data_dir}", *self.sizes(), *overrides]
        )

    def sizes(self) -> list[str]:
        return DRY if self.dry else []

    def run(self, name: str, *overrides: str) -> dict:
        train(self.config(name, *overrides))
        return json.loads((self.out / name / "metrics.json").read_text())

    def cli_args(self, *args: str, run_dir: Path | None = None) -> list[str]:
        """train.py's arguments for a run of ARGS (in run_dir), on this data, at this size."""
        return [
            *args,
            *([f"hydra.run.dir={run_dir}"] if run_dir else []),
            f"data.data_dir={self.data_dir}",
            *self.sizes(),
        ]

    def cli(self, *args: str, run_dir: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
        """`python train.py ARGS` in a process of its own; (the finished process, its seconds)."""
        command = [sys.executable, str(ROOT / "train.py"), *self.cli_args(*args, run_dir=run_dir)]
        # The callbacks below are given to those processes by name: gpu_acceptance.KillAtEpoch.
        path = os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=self.out, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": path}
        )
        return done, time.perf_counter() - start

    def step(self, name: str, check: Callable[[], tuple[bool | None, str]]) -> None:
        if time.monotonic() >= self.deadline:
            ok, detail = None, "not run: the part's time budget is spent"
        else:
            try:
                ok, detail = check()
            except Exception as error:  # one broken step must not hide the others
                ok, detail = (
                    False,
                    f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
                )
        self.steps.append(Step(name, ok, detail))
        print(f"[{'ok' if ok else 'not run' if ok is None else 'FAILED'}] {name}: {detail}", flush=True)

    # --- GPU checks ------------------------------------------------------------------------
    def check_precision(self) -> tuple[bool | None, str]:
        if self.dry:
            resolved = auto_precision("cpu")
            return resolved == "32-true", f"CPU -> {resolved} (the GPU rule is tested with a mocked capability)"
        capability = torch.cuda.get_device_capability()
        expected = "bf16-mixed" if capability >= (8, 0) else "16-mixed"
        resolved = auto_precision("gpu")
        return resolved == expected, f"compute capability {capability[0]}.{capability[1]} -> {resolved}"

    def check_channels_last_and_compile(self) -> tuple[bool | None, str]:
        channels_last = ["channels_last=true"] if self.dry else []  # the CUDA default; forced on the CPU
        compile_backend = ["+compile_options.backend=eager"] if self.dry else []
        self.run("plain", *CHECK_EPOCHS, *channels_last)
        self.run("compiled", *CHECK_EPOCHS, *channels_last, "compile=true", *compile_backend)
        plain = torch.load(self.out / "plain" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        compiled = torch.load(self.out / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        convs = [w for k, w in plain.items() if k.endswith("weight") and w.ndim == 4]
        nhwc = all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        same_keys = list(plain) == list(compiled)
        return (
            nhwc and same_keys,
            f"conv weights channels_last: {nhwc}; compiled checkpoint keys = plain keys: {same_keys}",
        )

    def check_placement(self) -> tuple[bool | None, str]:
        device = self.run("placement_device", *CHECK_EPOCHS, "data.placement=device")
        loader = self.run("placement_dataloader", *CHECK_EPOCHS, "data.placement=dataloader")
        difference = abs(device["test/acc"] - loader["test/acc"])
        tolerance = 0.0 if self.dry else 0.005  # on a GPU cuDNN's algorithms are not bit-reproducible
        return difference <= tolerance, (
            f"test/acc device {device['test/acc']:.4f}, dataloader {loader['test/acc']:.4f} (difference {difference:.4f}, "
            f"allowed {tolerance})"
        )

    def check_resume_after_kill(self) -> tuple[bool | None, str]:
        """Only the run to kill needs a process of its own; the other two run in this one."""
        epochs = [*CHECK_EPOCHS, "seed=0"]
        whole = self.run("uninterrupted", *epochs)
        killed_dir = self.out / "killed"
        kill = "+callbacks.kill={_target_:gpu_acceptance.KillAtEpoch,epoch:1}"
        done, _ = self.cli(*epochs, kill, run_dir=killed_dir)
        if done.returncode != -signal.SIGKILL:
            return False, f"the run to kill ended with {done.returncode}: {done.stderr[-300:]}"
        # Resumed in its own dir, where ModelCheckpoint finds the best checkpoint so far (in
        # another dir it would start a new best, and a tie could keep a different checkpoint).
        resumed = self.run("killed", *epochs, f"ckpt_path={killed_dir / 'checkpoints' / 'last.ckpt'}")
        keys = ("val/acc", "val/loss", "test/acc", "test/loss")
        differences = {k: abs(whole[k] - resumed[k]) for k in keys}
        tolerance = 0.0 if self.dry else 0.005
        worst = max(differences.values())
        return (
            worst <= tolerance,
            f"killed at epoch 1, resumed: largest metric difference {worst:.2g} (allowed {tolerance})",
        )

    def check_per_gpu(self) -> tuple[bool | None, str]:
        if self.gpus < 2:
            return None, f"needs 2+ GPUs ({self.gpus} here); the slot logic is tested on the CPU (tests/test_gpus.py)"
        seeds = ",".join(str(s) for s in range(self.gpus))
        record = "+callbacks.where={_target_:gpu_acceptance.RecordDevice,path:device.txt}"
        sweep = self.out / "per_gpu"
        done, _ = self.cli("-m", "hydra/launcher=per_gpu", f"seed={seeds}", record, f"hydra.sweep.dir={sweep}")
        devices = (
            [(sweep / str(job) / "device.txt").read_text() for job in range(self.gpus)] if done.returncode == 0 else []
        )
        return len(set(devices)) == self.gpus, f"{self.gpus} jobs on {len(set(devices))} distinct GPUs"

    def check_ddp(self) -> tuple[bool | None, str]:
        if self.gpus < 2:
            return (
                None,
                f"needs 2+ GPUs ({self.gpus} here); DDP runs on the CPU in tests/test_cli.py and tests/test_distributed.py",
            )
        done, _ = self.cli("trainer=ddp", f"trainer.devices={self.gpus}", run_dir=self.out / "ddp")
        return done.returncode == 0, f"trainer=ddp on {self.gpus} GPUs: exit {done.returncode}"

    # --- benchmarks ------------------------------------------------------------------------
    def benchmark(
        self, title: str, overrides: Sequence[str], ways: Sequence[str], target: float | None, max_batches: int | None
    ) -> list[Result]:
        name = f"{title}, {self.machine_name()}"
        run_dir = self.out / "benchmark" / "".join(c if c.isalnum() else "_" for c in title)
        cfg = self.config(str(run_dir.relative_to(self.out)), *overrides)
        results = measure(cfg, list(ways), self.repeats, 2 if self.dry else max_batches, 0, run_dir)
        chart = self.doc.parent / "benchmarks" / f"{run_dir.name.lower()}.png"
        bar_chart(results, name, chart)
        machine_text = machine(torch.device("cuda" if self.gpus else "cpu"), str(cfg.trainer.precision))
        command = "python scripts/gpu_acceptance.py --part bench" + (" --dry" if self.dry else "")
        write_section(
            self.doc,
            name,
            section(name, results, machine_text, command, target, chart.relative_to(self.doc.parent).as_posix()),
        )
        return results

    def bench_lenet(self) -> tuple[bool | None, str]:
        lenet = self.benchmark("LeNet-5 on MNIST (lenet5_fast)", ["experiment=lenet5_fast"], WAYS, 0.99, None)
        self.targets += [
            self.accuracy_in_time("LeNet-5 >= 99.0% test within 2 s of fit", lenet, 0.99, 2.0),
            Target(
                "the Lightning way within 5% of the resident loop (LeNet-5)",
                *self.at_least(median_ratio(lenet, LIGHTNING, RESIDENT_LOOP), 0.95, "{:.3f}x"),
            ),
        ]
        return True, f"{self.repeats} repeat(s) of {', '.join(WAYS)}"

    def bench_alexnet(self) -> tuple[bool | None, str]:
        if self.dry:  # the LeNet-5 benchmark's steps with another config (which tests/test_studies.py builds)
            return None, "dry mode: bench_lenet's steps with experiment=alexnet_fast, run on a GPU only"
        alexnet = self.benchmark("AlexNet on CIFAR-10 (alexnet_fast)", ["experiment=alexnet_fast"], WAYS, 0.90, None)
        self.targets.append(self.accuracy_in_time("AlexNet family >= 90% test within 20 s of fit", alexnet, 0.90, 20.0))
        return True, f"{self.repeats} repeat(s) of {', '.join(WAYS)}"

    def bench_224(self) -> tuple[bool | None, str]:
        # dry: the same steps, smaller (64x64 input, 256 hidden units: 5.2M parameters instead of 61M),
        # without writing 0.5 GB checkpoints
        small = ["data.image_size=64", "data.batch_size=16", "model.hidden_features=256", *NO_CHECKPOINTS]
        at_224 = [*AT_224, *small] if self.dry else AT_224
        ways = [RESIDENT_LOOP, LIGHTNING]
        throughput = self.benchmark("AlexNet at 224x224, throughput", at_224, ways, None, 40)
        speed = median(throughput, LIGHTNING, lambda r: r.images_per_second)
        self.targets.append(
            Target("AlexNet 224 >= 34,000 training images/s", *self.at_least(speed, 34_000, "{:,.0f} images/s"))
        )
        return True, f"{self.repeats} repeat(s) of {', '.join(ways)}"

    def bench_candidates(self) -> tuple[bool | None, str]:
        """Each candidate recipe `repeats` times through train.py, interleaved; the best is the one
        with the highest median validation accuracy among those within the fit-time target."""
        rows = []
        candidates = list(LENET5_GPU_CANDIDATES.items())
        for name, overrides in candidates[:1] if self.dry else candidates:
            title = f"lenet5_fast GPU candidate: {name}"
            if self.dry:  # one, with the dry sizes' batch and lr: the tiny random data set has no large batches
                overrides = [o for o in overrides if not o.startswith(("data.batch_size=", "optimizer.lr="))]
            results = self.benchmark(title, ["experiment=lenet5_fast", *overrides], [LIGHTNING], 0.99, None)
            rows.append(
                f"{name}: val {median(results, LIGHTNING, lambda r: r.val_acc[-1]):.4f}, "
                f"fit {median(results, LIGHTNING, lambda r: r.fit_seconds):.2f} s"
            )
        return True, "; ".join(rows)

    def bench_jpeg_decoding(self) -> tuple[bool | None, str]:
        """Images/s of a streamed 224x224 training epoch over generated 400x300 JPEGs: decoded
        by the DataLoader's workers (Pillow) against decoded on the GPU in batches (decode_on=device:
        nvJPEG), interleaved; the data.decode_on default should follow the faster one."""
        images, size, batch = (64, (64, 48), 16) if self.dry else (2000, (400, 300), 128)
        root = self.out / "jpegs"
        folder_throughput.make_folder(root, images, *size)
        workers = min(8, os.cpu_count() or 1)
        device = "cuda" if self.gpus else "cpu"
        rates: dict[str, list[float]] = {"workers": [], "device": []}
        for _ in range(self.repeats):
            for way in rates:
                count, seconds = folder_throughput.project_epoch(root, workers, batch, decode_on=way, device=device)
                rates[way].append(count / seconds)
        ratio = statistics.median(d / w for d, w in zip(rates["device"], rates["workers"]))
        text = ", ".join(
            f"{way} {statistics.median(r):,.0f} images/s ({min(r):,.0f}-{max(r):,.0f})" for way, r in rates.items()
        )
        self.targets.append(Target(f"JPEG decoding on {device} vs {workers} workers", f"{ratio:.2f}x", None))
        return True, f"{images} JPEGs of {size[0]}x{size[1]}, {self.repeats} repeat(s): {text}; ratio {ratio:.2f}"

    def run_sweep(self) -> tuple[bool | None, str]:
        """The 12-job LeNet-5 sweep (4 poolings x 3 seeds) all at once, then one job after another."""
        jobs = ["experiment=study_pooling", "hydra.sweeper.params.model=lenet5", "hydra.sweeper.params.seed='0,1,2'"]
        if self.dry:
            jobs = ["pooling=max,avg"]
        # dry: joblib runs one job at a time in the driver, without starting worker processes
        # (two jobs at once through the same launcher are tested in tests/test_cli.py)
        parallel = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={1 if self.dry else 12}"]
        seconds = {}
        modes = (("parallel", parallel),) if self.dry else (("parallel", parallel), ("sequential", []))
        for mode, launcher in modes:  # dry: the sequential sweep is Hydra's basic launcher, tested in tests/test_cli.py
            done, seconds[mode] = self.cli("-m", *jobs, *launcher, f"hydra.sweep.dir={self.out / 'sweep' / mode}")
            if done.returncode != 0:
                raise RuntimeError(f"the {mode} sweep failed: {done.stderr[-300:]}")
        text = ", ".join(f"{mode} {value:.1f} s" for mode, value in seconds.items())
        self.targets.append(
            Target("12-job LeNet-5 sweep <= 60 s", text, None if self.dry else seconds["parallel"] <= 60)
        )
        return True, text

    # --- figures -----------------------------------------------------------------------------
    def at_least(self, value: float, bound: float, text: str) -> tuple[str, bool | None]:
        return text.format(value), None if self.dry else value >= bound

    def accuracy_in_time(self, name: str, results: list[Result], accuracy: float, seconds: float) -> Target:
        test = median(results, LIGHTNING, lambda r: r.test_acc)
        fit = median(results, LIGHTNING, lambda r: r.fit_seconds)
        return Target(
            name, f"test {test:.4f} in {fit:.2f} s of fit", None if self.dry else test >= accuracy and fit <= seconds
        )

    def machine_name(self) -> str:
        return torch.cuda.get_device_name(0) if self.gpus else "CPU (dry mode)"

    def environment(self) -> str:
        if not self.gpus:
            return f"CPU ({platform.machine()}, dry mode: tiny sizes, nothing measured)"
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        return (
            f"{self.gpus} x {torch.cuda.get_device_name(0)}, driver {driver.stdout.split()[0] if driver.returncode == 0 else 'unknown'}, "
            f"CUDA {torch.version.cuda}, torch {torch.__version__}, lightning {L.__version__}"
        )

    def summary(self, part: str) -> str:
        mark = {True: "yes", False: "NO", None: "-"}
        lines = [
            f"### GPU acceptance ({part}), {self.machine_name()}",
            "",
            f"Measured {date.today().isoformat()} on {self.environment()}.",
            "",
            f"Command: `python scripts/gpu_acceptance.py --part {part}{' --dry' if self.dry else ''}`",
            "",
            "| check | passed | detail |",
            "|---|---|---|",
            *(f"| {s.name} | {mark[s.ok]} | {s.detail} |" for s in self.steps),
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *(f"| {t.name} | {t.value} | {mark[t.ok]} |" for t in self.targets),
        ]
        return "\n".join(lines)

    def parts(self) -> dict[str, list[tuple[str, Callable[[], tuple[bool | None, str]]]]]:
        return {
            "checks": [
                ("precision resolves to bf16-mixed only with native bf16", self.check_precision),
                ("channels_last, and compile=true keeps the checkpoint keys", self.check_channels_last_and_compile),
                ("data.placement=device and dataloader reach the same accuracy", self.check_placement),
                ("a killed run resumes to the uninterrupted run's metrics", self.check_resume_after_kill),
                ("hydra/launcher=per_gpu gives each job its own GPU", self.check_per_gpu),
                ("trainer=ddp on all visible GPUs", self.check_ddp),
            ],
            "bench": [
                ("benchmark: LeNet-5 on MNIST (lenet5_fast)", self.bench_lenet),
                ("benchmark: AlexNet at 224x224, throughput", self.bench_224),
                ("benchmark: lenet5_fast GPU candidates", self.bench_candidates),
                ("benchmark: JPEG decoding, workers vs the GPU", self.bench_jpeg_decoding),
                ("benchmark: AlexNet on CIFAR-10 (alexnet_fast)", self.bench_alexnet),
            ],
            "sweep": [("the 12-job sweep, parallel and sequential", self.run_sweep)],
        }

    def all(self, part: str = "all") -> bool:
        """The steps of `part` (or of every part); True when no check failed (targets missed are
        reported, not failures)."""
        for name, steps in self.parts().items():
            if part in ("all", name):
                for step_name, check in steps:
                    self.step(step_name, check)
        text = self.summary(part)
        write_section(self.doc, f"GPU acceptance ({part}), {self.machine_name()}", text)
        print(text)
        return all(s.ok is not False for s in self.steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["checks", "bench", "sweep", "all"], default="all")
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (the default without CUDA)")
    parser.add_argument("--data-dir", default=os.environ.get("CLASSIC_CNNS_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--out", default=None, help="run dirs (default: outputs/acceptance/DATE_TIME)")
    parser.add_argument(
        "--doc", default=None, help="where the sections go (default: docs/benchmarks.md; dry: OUT/benchmarks.md)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"runs of each benchmark way (default {REPEATS}; dry 1)"
    )
    args = parser.parse_args()
    dry = args.dry or not torch.cuda.is_available()
    repeats = args.repeats or (1 if dry else REPEATS)
    steps = plan(repeats)
    print(plan_table([s for s in steps if args.part in ("all", s.part)]), flush=True)
    problems = check_plan(steps)
    if problems:
        sys.exit("error: the plan does not fit the budget: " + "; ".join(problems))
    out = Path(args.out or ROOT / "outputs" / "acceptance" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    doc = Path(args.doc) if args.doc else out / "benchmarks.md" if dry else ROOT / "docs" / "benchmarks.md"
    register_resolvers()
    acceptance = Acceptance(out, Path(args.data_dir).resolve(), doc.resolve(), dry, repeats, BUDGET_S[args.part])
    passed = acceptance.all(args.part)
    print(f"sections written to {doc}; run dirs in {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
