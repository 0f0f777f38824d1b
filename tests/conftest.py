"""Tiny MNIST and CIFAR-10 sets in the real on-disk formats, and configs composed from conf/."""

import contextlib
import importlib.util
import io
import logging
import os
import pickle
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from classic_cnns.runs.entry_points import compose_train_config
from classic_cnns.runs.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

register_resolvers()  # as the entry points do: ${unique_id:}, ${auto_precision:}, ...


def fake_images(n: int, channels: int, size: int, first_id: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose first two pixels encode a unique id, and random labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    ids = np.arange(first_id, first_id + n)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = ids % 256, ids // 256
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def image_ids(images) -> set[int]:
    images = np.asarray(images)
    return set((images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)).tolist())


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 240, n_test: int = 100) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, first_id in (("train", n_train, 0), ("t10k", n_test, 10_000)):
        images, labels = fake_images(n, 1, 28, first_id, seed=first_id)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_cifar10(root: Path, per_batch: int = 48, n_test: int = 100) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        first_id = 10_000 if name == "test_batch" else index * per_batch
        images, labels = fake_images(n, 3, 32, first_id, seed=index)
        batch = {"data": images.reshape(n, -1), "labels": labels.astype(int).tolist(), "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def pytest_configure(config):
    """Each pytest-xdist worker (and each process it starts) takes its share of the cores: with
    torch's default, every worker of `-n 2` ran 2 threads on the 2 cores, and oversubscribed
    threads made each step 2-3x slower than alone."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One directory holding both tiny sets, as a user's data/ would."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar10(root)
    return root


def compose_config(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    """The config `python train.py OVERRIDES` would get, writing into output_dir, reading data_dir."""
    return compose_train_config([f"paths.output_dir={output_dir}", f"data.data_dir={data_dir}", *overrides])


def tensorboard_run(output_dir: Path) -> Path:
    """The TensorBoard run dir a run wrote (RUN_DIR/RUN_NAME/, the CSV logger's csv/ aside)."""
    (run,) = {p.parent for p in Path(output_dir).rglob("events.out.tfevents.*")}
    return run


FAST = [
    "trainer=debug",
    "data.batch_size=32",
    "data.eval_batch_size=50",
    "data.val_size=40",
]


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """make_cfg(*overrides): a fast CPU config over the tiny data, writing into tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config([*FAST, *overrides], output_dir or tmp_path / "run", data_dir)

    return make


# --- commands as a user types them ----------------------------------------------------------
def run_command(script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` run in this process, as a subprocess would run it: the script runs as
    __main__ (runpy), with its own argv, working directory, environment, fresh warning filters and
    stdout/stderr (file descriptors 1 and 2, so the output of the processes it starts, such as a
    DDP rank, is captured too); its exit code is what it passed to sys.exit. What it changes in the
    process (environment, logging, torch threads, signal handlers, a process group) is put back
    afterwards. Why: a new process pays ~7-13 s of imports (lightning -> torchmetrics ->
    torchvision) on a 2-core CI machine, more than most runs take. Where the process boundary is
    itself under test (kills, concurrent runs, a search's own signals), tests start processes."""
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv[:], os.getcwd()
    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level
    saved_threads = torch.get_num_threads()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # Lightning's loggers log through the root's handlers (Hydra's), once a line, as where logging
    # is set up before Lightning is imported; in train.py's own process they have handlers of
    # their own (tested in real processes: test_cli.test_runs_started_together_never_share_a_dir).
    lightning_loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    saved_lightning = [(logger.handlers[:], logger.propagate) for logger in lightning_loggers]
    for logger in lightning_loggers:
        logger.handlers[:], logger.propagate = [], True
    returncode = 0
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        sys.stdout.flush(), sys.stderr.flush()
        saved_fds = os.dup(1), os.dup(2)
        os.dup2(out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        stdout, stderr = (io.TextIOWrapper(open(fd, "wb", closefd=False), write_through=True) for fd in (1, 2))
        os.environ.update(env or {})
        os.chdir(cwd)
        sys.argv = [str(script), *args]
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                warnings.resetwarnings()  # a new interpreter's filters, and warnings shown again
                warnings.simplefilter("default")
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: print(
                    warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr
                )
                try:
                    runpy.run_path(str(script), run_name="__main__")
                except SystemExit as stop:
                    if stop.code is None or isinstance(stop.code, int):
                        returncode = stop.code or 0
                    else:  # sys.exit("message") prints it and exits 1
                        print(stop.code, file=sys.stderr)
                        returncode = 1
                except Exception:  # as Python does for an uncaught exception
                    traceback.print_exc()
                    returncode = 1
        finally:
            stdout.flush(), stderr.flush()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            for handler in root_logger.handlers:
                if handler not in saved_handlers:
                    handler.close()
            root_logger.handlers[:] = saved_handlers
            root_logger.setLevel(saved_level)
            for logger, (handlers, propagate) in zip(lightning_loggers, saved_lightning):
                logger.handlers[:], logger.propagate = handlers, propagate
            torch.set_num_threads(saved_threads)
            if torch.distributed.is_initialized():  # a DDP rank 0 that stopped before its teardown
                torch.distributed.destroy_process_group()
            for number, handler in saved_signals.items():
                signal.signal(number, handler)
        out_file.seek(0), err_file.seek(0)
        output, errors = (f.read().decode(errors="replace") for f in (out_file, err_file))
    return subprocess.CompletedProcess([script, *args], returncode, output, errors)


# --- services: tests that need them skip where they cannot start, and fail under CI (CI=true) ---
def service_unavailable(reason: str):
    """Skip (a developer's machine without the service) or, under CI, fail: CI must run them."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's `postgresql` binaries), as an Optuna storage URL."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or [Path(p) for p in [shutil.which("pg_ctl")] if p]
    if not bins:
        service_unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    if importlib.util.find_spec("psycopg") is None:
        service_unavailable("no PostgreSQL driver (pip install 'psycopg[binary]', in the test extra)")
    bin_dir, root = (
        bins[-1].parent,
        Path(tempfile.mkdtemp(prefix="classic_cnns_postgres_")),
    )  # outside pytest's 0700 dirs
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data, log = root / "data", root / "server.log"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    steps = [
        [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start"],
    ]
    for step in steps:
        done = subprocess.run([*as_user, *step], capture_output=True, text=True)
        if done.returncode != 0:
            service_unavailable(
                f"PostgreSQL did not start ({' '.join(step[:1])}): {(done.stderr or done.stdout)[-500:]}"
            )
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of an idle SLURM partition to submit to (scripts/slurm_local_cluster.sh start)."""
    if shutil.which("sinfo") is None:
        service_unavailable(
            "no SLURM here: scripts/slurm_local_cluster.sh install && scripts/slurm_local_cluster.sh start"
        )
    state = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30)
    partitions = [line.split() for line in state.stdout.splitlines() if line.split()[-1:] in (["idle"], ["mix"])]
    if state.returncode != 0 or not partitions:
        service_unavailable(
            f"no idle SLURM node (scripts/slurm_local_cluster.sh start): {state.stderr.strip() or state.stdout.strip()}"
        )
    return partitions[0][0].rstrip("*")
