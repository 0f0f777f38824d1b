"""The GPU acceptance run (scripts/gpu_acceptance.py): every GPU check and benchmark in one call.

On a CUDA machine it runs the checks (precision, channels_last, compile, placement parity, resume
after a kill, one GPU per job, DDP), the benchmarks of docs/benchmarks.md (through
classic_cnns.tools.benchmark, repeated and interleaved) and the 12-job sweep in parallel and in
sequence, writes each measured section into docs/benchmarks.md and prints a summary against the
targets. Without CUDA it runs the same steps in a dry mode (tiny sizes, CPU, one repeat, the
sections into the run dir): it proves the steps work, it measures nothing.
"""

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from classic_cnns.tools.benchmark.measure import WAYS, Result, measure
from classic_cnns.tools.benchmark.report import bar_chart, by_way, machine, section, write_section
from classic_cnns.runs.resolvers import auto_precision
from classic_cnns.runs.train import train

ROOT = Path(__file__).resolve().parents[3]  # the repository: conf/, train.py

# Small enough for seconds on a CPU, big enough for every step to do its real work.
DRY = [
    "trainer.accelerator=cpu", "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "data.batch_size=16", "data.eval_batch_size=32", "data.val_size=32",
    "callbacks=fast", "callbacks.progress_bar=null", "logger=csv", "++trainer.enable_model_summary=false",
    "++trainer.enable_progress_bar=false",
]  # fmt: skip


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

    def __init__(self, out: Path, data_dir: Path, doc: Path, dry: bool, repeats: int) -> None:
        self.out, self.data_dir, self.doc, self.dry, self.repeats = out, data_dir, doc, dry, repeats
        out.mkdir(parents=True, exist_ok=True)  # the subprocess runs start in it
        self.gpus = 0 if dry else torch.cuda.device_count()
        self.steps: list[Step] = []
        self.targets: list[Target] = []

    # --- helpers ---------------------------------------------------------------------------
    def config(self, name: str, *overrides: str) -> DictConfig:
        """train.py's config for `overrides` (plus the dry sizes), writing into out/name."""
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"paths.output_dir={self.out / name}", f"data.data_dir={self.data_dir}", *self.sizes(), *overrides],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra
        return cfg

    def sizes(self) -> list[str]:
        return DRY if self.dry else []

    def run(self, name: str, *overrides: str) -> dict:
        train(self.config(name, *overrides))
        return json.loads((self.out / name / "metrics.json").read_text())

    def cli(self, *args: str, run_dir: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
        """`python train.py ARGS` in a process of its own; (the finished process, its seconds)."""
        where = [f"hydra.run.dir={run_dir}"] if run_dir else []
        command = [sys.executable, str(ROOT / "train.py"), *args, *where, f"data.data_dir={self.data_dir}", *self.sizes()]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=self.out, capture_output=True, text=True)
        return done, time.perf_counter() - start

    def step(self, name: str, check: Callable[[], tuple[bool | None, str]]) -> None:
        try:
            ok, detail = check()
        except Exception as error:  # one broken step must not hide the others
            ok, detail = False, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
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
        self.run("plain", *channels_last)
        self.run("compiled", *channels_last, "compile=true", *compile_backend)
        plain = torch.load(self.out / "plain" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        compiled = torch.load(self.out / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        convs = [w for k, w in plain.items() if k.endswith("weight") and w.ndim == 4]
        nhwc = all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        same_keys = list(plain) == list(compiled)
        return nhwc and same_keys, f"conv weights channels_last: {nhwc}; compiled checkpoint keys = plain keys: {same_keys}"

    def check_placement(self) -> tuple[bool | None, str]:
        device = self.run("placement_device", "data.placement=device")
        loader = self.run("placement_dataloader", "data.placement=dataloader")
        difference = abs(device["test/acc"] - loader["test/acc"])
        tolerance = 0.0 if self.dry else 0.005  # on a GPU cuDNN's algorithms are not bit-reproducible
        return difference <= tolerance, (
            f"test/acc device {device['test/acc']:.4f}, dataloader {loader['test/acc']:.4f} (difference {difference:.4f}, "
            f"allowed {tolerance})"
        )

    def check_resume_after_kill(self) -> tuple[bool | None, str]:
        epochs = ["trainer.max_epochs=2", "seed=0"]
        done, _ = self.cli(*epochs, run_dir=self.out / "uninterrupted")
        if done.returncode != 0:
            return False, f"the uninterrupted run failed: {done.stderr[-300:]}"
        whole = json.loads((self.out / "uninterrupted" / "metrics.json").read_text())
        killed_dir = self.out / "killed"
        kill = f"+callbacks.kill={{_target_:{__name__}.KillAtEpoch,epoch:1}}"
        done, _ = self.cli(*epochs, kill, run_dir=killed_dir)
        if done.returncode != -signal.SIGKILL:
            return False, f"the run to kill ended with {done.returncode}: {done.stderr[-300:]}"
        # Resumed in its own dir, where ModelCheckpoint finds the best checkpoint so far (in
        # another dir it would start a new best, and a tie could keep a different checkpoint).
        last = killed_dir / "checkpoints" / "last.ckpt"
        done, _ = self.cli(*epochs, f"ckpt_path={last}", run_dir=killed_dir)
        if done.returncode != 0:
            return False, f"the resumed run failed: {done.stderr[-300:]}"
        resumed = json.loads((killed_dir / "metrics.json").read_text())
        keys = ("val/acc", "val/loss", "test/acc", "test/loss")
        differences = {k: abs(whole[k] - resumed[k]) for k in keys}
        tolerance = 0.0 if self.dry else 0.005
        worst = max(differences.values())
        return worst <= tolerance, f"killed at epoch 1, resumed: largest metric difference {worst:.2g} (allowed {tolerance})"

    def check_per_gpu(self) -> tuple[bool | None, str]:
        if self.gpus < 2:
            return None, f"needs 2+ GPUs ({self.gpus} here); the slot logic is tested on the CPU (tests/test_gpus.py)"
        seeds = ",".join(str(s) for s in range(self.gpus))
        record = f"+callbacks.where={{_target_:{__name__}.RecordDevice,path:device.txt}}"
        sweep = self.out / "per_gpu"
        done, _ = self.cli("-m", "hydra/launcher=per_gpu", f"seed={seeds}", record, f"hydra.sweep.dir={sweep}")
        devices = [(sweep / str(job) / "device.txt").read_text() for job in range(self.gpus)] if done.returncode == 0 else []
        return len(set(devices)) == self.gpus, f"{self.gpus} jobs on {len(set(devices))} distinct GPUs"

    def check_ddp(self) -> tuple[bool | None, str]:
        if self.gpus < 2:
            return None, f"needs 2+ GPUs ({self.gpus} here); DDP runs on the CPU in tests/test_cli.py and tests/test_distributed.py"
        done, _ = self.cli("trainer=ddp", f"trainer.devices={self.gpus}", run_dir=self.out / "ddp")
        return done.returncode == 0, f"trainer=ddp on {self.gpus} GPUs: exit {done.returncode}"

    # --- benchmarks ------------------------------------------------------------------------
    def benchmark(self, title: str, overrides: Sequence[str], ways: Sequence[str], target: float | None, max_batches: int | None) -> list[Result]:
        name = f"{title}, {self.machine_name()}"
        run_dir = self.out / "benchmark" / "".join(c if c.isalnum() else "_" for c in title)
        cfg = self.config(str(run_dir.relative_to(self.out)), *overrides)
        results = measure(cfg, list(ways), self.repeats, 2 if self.dry else max_batches, 0, run_dir)
        chart = self.doc.parent / "benchmarks" / f"{run_dir.name.lower()}.png"
        bar_chart(results, name, chart)
        machine_text = machine(torch.device("cuda" if self.gpus else "cpu"), str(cfg.trainer.precision))
        command = "python scripts/gpu_acceptance.py" + (" --dry" if self.dry else "")
        write_section(self.doc, name, section(name, results, machine_text, command, target, chart.relative_to(self.doc.parent).as_posix()))
        return results

    def run_benchmarks(self) -> None:
        lenet = self.benchmark("LeNet-5 on MNIST (lenet5_fast)", ["experiment=lenet5_fast"], WAYS, 0.99, None)
        alexnet = self.benchmark("AlexNet on CIFAR-10 (alexnet_fast)", ["experiment=alexnet_fast"], WAYS, 0.90, None)
        at_224 = ["model=alexnet_torchvision", "data.image_size=224", "trainer.max_epochs=2"]
        at_224 += ["data.image_size=64"] if self.dry else ["data.batch_size=512"]  # dry: the same steps, smaller images
        throughput = self.benchmark("AlexNet at 224x224, throughput", at_224, WAYS[1:], None, 40)
        self.targets += [
            self.accuracy_in_time("LeNet-5 >= 99.0% test within 2 s of fit", lenet, 0.99, 2.0),
            self.accuracy_in_time("AlexNet family >= 90% test within 20 s of fit", alexnet, 0.90, 20.0),
            Target("AlexNet 224 >= 34,000 training images/s", *self.at_least(self.median(throughput, WAYS[2], "images_per_second"), 34_000, "{:,.0f} images/s")),
            Target("the Lightning way within 5% of the resident loop (LeNet-5)", *self.at_least(self.ratio(lenet), 0.95, "{:.3f}x")),
        ]  # fmt: skip

    def run_sweep(self) -> None:
        """The 12-job LeNet-5 sweep (4 poolings x 3 seeds) all at once, then one job after another."""
        jobs = ["experiment=study_pooling", "hydra.sweeper.params.model=lenet5", "hydra.sweeper.params.seed='0,1,2'"]
        if self.dry:
            jobs = ["pooling=max,avg"]
        parallel = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={2 if self.dry else 12}"]
        seconds = {}
        for mode, launcher in (("parallel", parallel), ("sequential", [])):
            done, seconds[mode] = self.cli("-m", *jobs, *launcher, f"hydra.sweep.dir={self.out / 'sweep' / mode}")
            if done.returncode != 0:
                raise RuntimeError(f"the {mode} sweep failed: {done.stderr[-300:]}")
        text = f"parallel {seconds['parallel']:.1f} s, sequential {seconds['sequential']:.1f} s"
        self.targets.append(Target("12-job LeNet-5 sweep <= 60 s", text, None if self.dry else seconds["parallel"] <= 60))

    # --- figures -----------------------------------------------------------------------------
    @staticmethod
    def median(results: list[Result], way: str, attribute: str) -> float:
        values = sorted(getattr(r, attribute) for r in by_way(results).get(way, []))
        return values[len(values) // 2] if values else float("nan")

    @staticmethod
    def ratio(results: list[Result]) -> float:
        runs = by_way(results)
        base = {r.repeat: r.images_per_second for r in runs.get(WAYS[1], [])}
        ratios = sorted(r.images_per_second / base[r.repeat] for r in runs.get(WAYS[2], []) if r.repeat in base)
        return ratios[len(ratios) // 2] if ratios else float("nan")

    def at_least(self, value: float, bound: float, text: str) -> tuple[str, bool | None]:
        return text.format(value), None if self.dry else value >= bound

    def accuracy_in_time(self, name: str, results: list[Result], accuracy: float, seconds: float) -> Target:
        test, fit = self.median(results, WAYS[2], "test_acc"), self.median(results, WAYS[2], "fit_seconds")
        return Target(name, f"test {test:.4f} in {fit:.2f} s of fit", None if self.dry else test >= accuracy and fit <= seconds)

    def machine_name(self) -> str:
        return torch.cuda.get_device_name(0) if self.gpus else "CPU (dry mode)"

    def environment(self) -> str:
        if not self.gpus:
            return f"CPU ({platform.machine()}, dry mode: tiny sizes, nothing measured)"
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
        return (f"{self.gpus} x {torch.cuda.get_device_name(0)}, driver {driver.stdout.split()[0] if driver.returncode == 0 else 'unknown'}, "
                f"CUDA {torch.version.cuda}, torch {torch.__version__}, lightning {L.__version__}")  # fmt: skip

    def summary(self) -> str:
        mark = {True: "yes", False: "NO", None: "-"}
        lines = [
            f"### GPU acceptance, {self.machine_name()}",
            "",
            f"Measured {date.today().isoformat()} on {self.environment()}.",
            "",
            f"Command: `python scripts/gpu_acceptance.py{' --dry' if self.dry else ''}`",
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

    def all(self) -> bool:
        """Every step; True when no check failed (targets missed are reported, not failures)."""
        self.step("precision resolves to bf16-mixed only with native bf16", self.check_precision)
        self.step("channels_last, and compile=true keeps the checkpoint keys", self.check_channels_last_and_compile)
        self.step("data.placement=device and dataloader reach the same accuracy", self.check_placement)
        self.step("a killed run resumes to the uninterrupted run's metrics", self.check_resume_after_kill)
        self.step("hydra/launcher=per_gpu gives each job its own GPU", self.check_per_gpu)
        self.step("trainer=ddp on all visible GPUs", self.check_ddp)
        self.step("benchmarks of docs/benchmarks.md", lambda: (self.run_benchmarks(), (True, f"{self.repeats} repeat(s) each"))[1])
        self.step("the 12-job sweep, parallel and sequential", lambda: (self.run_sweep(), (True, self.targets[-1].value))[1])
        text = self.summary()
        write_section(self.doc, f"GPU acceptance, {self.machine_name()}", text)
        print(text)
        return all(s.ok is not False for s in self.steps)
