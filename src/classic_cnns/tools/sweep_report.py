"""Turn a sweep directory into a table and plots (scripts/report.py).

Each job dir holds `.hydra/overrides.yaml`, `metrics.json` (or `error.txt` if it failed) and
TensorBoard events. A configuration is named by the overrides that vary across the sweep; jobs
that differ only in `seed=` form one configuration, and the table gives the mean and standard
deviation over its seeds. The reference configuration is the one with the highest mean
validation accuracy (the test set never chooses it); each other configuration's test accuracies
are compared with the reference's by Welch's t-test, the p-values Holm-Bonferroni corrected for
the number of comparisons, and the sentence stating each conclusion is generated from the
corrected test: "worse", "better" and "not separable" are tested statements. With a target
training accuracy (the activation study's question), the epochs each configuration needed are
compared with the reference's the same way, as a family of their own.
"""

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from classic_cnns import ClassicCNNsError
from classic_cnns.plotting import bars_figure, curves_figure, save

SEED_KEYS = ("seed",)
ALPHA = 0.05  # family-wise significance level of the comparisons with the reference
MIN_SEEDS = 5  # fewer seeds per configuration: the report says so
SIGNIFICANCE_NOTE = (
    "*vs reference*: the difference of each configuration's mean test accuracy from the reference's (the "
    "configuration with the highest mean validation accuracy; the test set never chooses it), the p-value of a "
    "two-sided Welch t-test (unequal variances) on their test accuracies over seeds, and that p-value "
    "Holm-Bonferroni corrected for the number of comparisons with the reference (*Holm p*); **yes** marks a "
    f"corrected p < {ALPHA}: a difference larger than the spread over seeds, with a family-wise error rate of "
    f"{ALPHA}. *no* means the seeds cannot tell the two apart (not that they are proven equal)."
)
LRN_NOTE = (
    "*lrnN divisor/k^beta*: how much LRN layer N's divisor (k + alpha * sum a^2)^beta varied, on 64 validation "
    "images with the kept weights: its median and maximum over k^beta (means over seeds). 1.000 means LRN was "
    "only the constant factor k^-beta there."
)
FIT_NOTE = (
    "*fit s*: wall-clock seconds of each job's fit, the mean over seeds (fastest-slowest). It measures the machine "
    "as it was while the job ran (other work on it, jobs run side by side), not the configuration: compare speed "
    "with scripts/benchmark.py (docs/benchmarks.md), not with this column."
)
CURVES = ("train/acc", "val/acc")
TOP5 = (
    "test/acc_top5",
    "val/acc_top5",
)  # the AlexNet paper's measure (top5=true): the true class among the five most probable
LRN_DIVISOR = re.compile(r"lrn\d+/divisor_(median|max)")  # metrics.json of nets with LRN layers


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()), key=lambda p: p.name)
    if not jobs:
        raise ClassicCNNsError(f"{sweep_dir} holds no job directories (with .hydra/overrides.yaml): is it a sweep dir?")
    return jobs


def _override_key(override: str) -> str:
    """`+seed=3`, `++seed=3`, `seed=3` -> `seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def _refuse_repeated_seeds(job_dirs: list[Path], all_overrides: list[list[str]], names: list[str]) -> None:
    """Sweeps reported together add seeds; a seed run in two of them would count twice and make
    the spread over seeds look smaller than it is."""
    seen: dict[tuple[str, str], Path] = {}
    for job_dir, overrides, name in zip(job_dirs, all_overrides, names):
        if not (job_dir / "metrics.json").exists():  # a failed job adds nothing: its seed may be run again
            continue
        seeds = [o for o in overrides if _override_key(o) in SEED_KEYS]
        seed = seeds[-1].split("=", 1)[-1] if seeds and "=" in seeds[-1] else ""  # the last one counts, as in Hydra
        if seed.lower() == "null":  # a seed drawn at random in each job
            continue
        key = (name, f"seed={seed}" if seed else "")
        if key in seen and seen[key].parent != job_dir.parent:
            raise ClassicCNNsError(
                f"{name} with {key[1] or 'the default seed'} is in {seen[key]} and in {job_dir}: sweeps reported "
                "together must add other seeds (a seed counted twice makes the spread look smaller); leave one out "
                "or run the added sweep with other seeds"
            )
        seen.setdefault(key, job_dir)


def _configurations(all_overrides: list[list[str]]) -> tuple[list[str], list[str]]:
    """Each job's name from the overrides that vary (seed excluded), and the ones all share."""
    common = set.intersection(*(set(o) for o in all_overrides))
    place: dict[str, int] = {}  # each key's first place: sweeps may write their keys in another order
    for override in (o for overrides in all_overrides for o in overrides):
        place.setdefault(_override_key(override), len(place))
    names = [
        " ".join(
            sorted(
                (o for o in overrides if o not in common and _override_key(o) not in SEED_KEYS),
                key=lambda o: place[_override_key(o)],
            )
        )
        or "(all)"
        for overrides in all_overrides
    ]
    return names, [o for o in all_overrides[0] if o in common]


def _curves(job_dir: Path, job: str, configuration: str) -> list[dict]:
    """One row per epoch of a job: its train/acc and val/acc. The project logs them at x = the
    epoch (1, 2, ...); runs from before that have Lightning's `epoch` scalar at the optimizer step
    of every epoch-level metric, which maps the metric to its epoch (validation may run only
    every few epochs)."""
    rows: dict[int, dict] = {}
    for events_dir in sorted({events.parent for events in job_dir.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(events_dir), size_guidance={"scalars": 0}).Reload()
        tags = events.Tags()["scalars"]
        epoch_at_step = {e.step: int(e.value) + 1 for e in reversed(events.Scalars("epoch"))} if "epoch" in tags else {}
        for tag in CURVES:
            for event in events.Scalars(tag) if tag in tags else []:
                epoch = epoch_at_step.get(event.step, event.step)
                rows.setdefault(epoch, {"job": job, "configuration": configuration, "epoch": epoch})[tag] = event.value
    return [rows[epoch] for epoch in sorted(rows)]


def load_sweep(
    sweep_dir: str | Path, more: tuple[str | Path, ...] = ()
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """One row per job (its metrics), one row per job and epoch (its train/acc and val/acc), and
    the overrides common to all jobs. `more`: sweeps that add seeds to the first (e.g. run later
    with seed=3,4); jobs are then named by their directory's path."""
    jobs, curves = [], []
    sweeps = [Path(sweep_dir), *map(Path, more)]
    if len({s.resolve() for s in sweeps}) < len(sweeps):
        raise ClassicCNNsError(
            f"a sweep is given twice among {', '.join(map(str, sweeps))}: its seeds would count twice"
        )
    job_dirs = [job for sweep in sweeps for job in _job_dirs(sweep)]
    all_overrides = [yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()) or [] for d in job_dirs]
    names, common = _configurations(all_overrides)
    _refuse_repeated_seeds(job_dirs, all_overrides, names)
    for job_dir, overrides, name in zip(job_dirs, all_overrides, names):
        job = str(job_dir) if more else job_dir.name
        row = {"job": job, "configuration": name, "overrides": " ".join(overrides)}
        metrics_file = job_dir / "metrics.json"
        if metrics_file.exists():
            row |= {
                "status": "completed",
                **json.loads(metrics_file.read_text()),
            }  # (pandas' reader turns numbers into dates)
        else:
            error = job_dir / "error.txt"
            row |= {
                "status": "failed",
                "error": error.read_text().strip().splitlines()[-1] if error.exists() else "no metrics.json",
            }
        jobs.append(row)
        curves += _curves(job_dir, job, name)
    return pd.DataFrame(jobs), pd.DataFrame(curves, columns=["job", "configuration", "epoch", *CURVES]), common


def per_epoch(curves: pd.DataFrame, metric: str = "val/acc") -> pd.DataFrame:
    """`metric` per configuration and epoch: mean, standard deviation and number of seeds."""
    rows = curves.dropna(subset=[metric]).groupby(["configuration", "epoch"])[metric]
    return pd.DataFrame({"mean": rows.mean(), "std": rows.std(), "runs": rows.count()}).reset_index()


def epochs_to_train_acc(curves: pd.DataFrame, target: float) -> pd.Series:
    """Per job, the first epoch whose training accuracy reached `target` (NaN: never)."""
    reached = curves[curves["train/acc"] >= target].groupby("job")["epoch"].min()
    return reached.reindex(curves["job"].unique())


def summarize_sweep(jobs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the final metrics (and of `epochs_to_target`, where present, with
    the number of seeds that reached it; the mean of each LRN layer's divisor spread, where there
    are LRN layers), per configuration, highest mean validation accuracy first: that one is the
    reference the others' test accuracies are compared with."""
    done = jobs[jobs["status"] == "completed"]
    if done.empty:
        return pd.DataFrame()
    columns = dict(runs=("job", "count"))
    for metric in ("test/acc", "val/acc", *TOP5):  # runs with test=false have no test/acc; top5=true runs add top-5
        if metric in done:
            name = metric.replace("/", "_")
            columns |= {f"{name}_mean": (metric, "mean"), f"{name}_std": (metric, "std")}
    columns |= dict(
        params=("params", "first"),
        fit_seconds=("fit_seconds", "mean"),
        fit_min=("fit_seconds", "min"),
        fit_max=("fit_seconds", "max"),
        epochs=("epochs", "mean"),
    )
    if "epochs_to_target" in done:
        columns |= dict(
            to_target_mean=("epochs_to_target", "mean"),
            to_target_std=("epochs_to_target", "std"),
            to_target_runs=("epochs_to_target", "count"),
        )
    columns |= {name: (name, "mean") for name in sorted(done.columns) if LRN_DIVISOR.fullmatch(name)}
    table = done.groupby("configuration", sort=False).agg(**columns)
    table = table.fillna({column: 0.0 for column in table if column.endswith(("acc_std", "acc_top5_std"))})
    table = table.sort_values("val_acc_mean", ascending=False, kind="stable")
    if "test_acc_mean" not in table or len(table) == 1:  # test=false, or nothing to compare with
        return table
    return table.join(compare_with_reference(done, table.index[0]))


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the given order: with the m defined
    p-values sorted ascending, p_(1) <= ... <= p_(m), the i-th becomes
    max over j <= i of min(1, (m - j + 1) * p_(j)). Rejecting where the adjusted value is below
    alpha keeps the family-wise error rate at alpha. NaN (no test) stays NaN and does not count in m."""
    defined = sorted((p, index) for index, p in enumerate(p_values) if not pd.isna(p))
    adjusted, running = [float("nan")] * len(p_values), 0.0
    for rank, (p, index) in enumerate(defined):
        running = max(running, min(1.0, (len(defined) - rank) * p))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Measure:
    """What a comparison with the reference is about, and how its sentence says it."""

    metric: str  # a column of the jobs table
    name: str  # in the sentence: "(test accuracy -0.0014, ...)"
    lower: str = "is worse"  # a lower mean than the reference's
    higher: str = "is better"
    number_format: str = ".4f"


TEST_ACCURACY = Measure("test/acc", "test accuracy")


def epochs_to_target_measure(target: float) -> Measure:
    return Measure(
        "epochs_to_target", f"epochs to train acc {target:g}", "needs fewer epochs", "needs more epochs", ".1f"
    )


def compare_with_reference(done: pd.DataFrame, reference: str, measure: Measure = TEST_ACCURACY) -> pd.DataFrame:
    """Per configuration: its mean of `measure.metric` minus the reference's, the Welch t-test
    p-value of the two sets of seeds, that p-value Holm-corrected over all comparisons with the
    reference, whether the corrected p < ALPHA, the seeds on each side, and the sentence stating
    the conclusion. No test (NaN/None) where a side has fewer than 2 seeds, where neither side
    varies (Welch's t is then undefined, not infinite), or where a run lacks the metric: a run
    that never reached a target is the slowest of all, not a missing one, so leaving it out
    would bias the mean."""
    values_of = done.groupby("configuration", sort=False)[measure.metric].apply(list)
    reference_values = values_of[reference]
    rows = {}
    for configuration, values in values_of.items():
        complete = not (pd.isna(values).any() or pd.isna(reference_values).any())
        difference = float(np.mean(values) - np.mean(reference_values)) if complete else np.nan
        p = float("nan")
        testable = complete and min(len(values), len(reference_values)) >= 2
        if configuration != reference and testable and max(np.var(values), np.var(reference_values)) > 0:
            with warnings.catch_warnings():  # nearly equal values: scipy warns, the p-value stands
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(stats.ttest_ind(values, reference_values, equal_var=False).pvalue)
        rows[configuration] = {
            "vs_reference": difference,
            "p_welch": p,
            "seeds": len(values),
            "reference_seeds": len(reference_values),
            "missing": int(pd.isna(values).sum()),
            "reference_missing": int(pd.isna(reference_values).sum()),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["p_holm"] = holm_adjusted(table["p_welch"].tolist())
    table["significant"] = [None if pd.isna(p) else bool(p < ALPHA) for p in table["p_holm"]]
    table["conclusion"] = [
        conclusion(name, reference, row, measure) for name, row in zip(table.index, table.itertuples())
    ]
    return table.drop(columns=["missing", "reference_missing"])


def _seeds(n: int, n_reference: int) -> str:
    return f"{n} seeds" if n == n_reference else f"{n} and {n_reference} seeds"


def conclusion(name: str, reference: str, row, measure: Measure = TEST_ACCURACY) -> str:
    """The sentence a reader may quote, generated from the corrected test and nothing else.
    `row`: compare_with_reference's row (vs_reference, p_holm, significant, seeds, missing, ...)."""
    seeds = _seeds(row.seeds, row.reference_seeds)
    if name == reference:
        return f"{name} is the reference: the highest mean validation accuracy."
    if row.missing or row.reference_missing:
        have = f"{row.seeds - row.missing} of {row.seeds} and {row.reference_seeds - row.reference_missing} of {row.reference_seeds}"
        return f"{name} cannot be compared with {reference} on {measure.name}: {have} seeds have it (not tested)."
    if row.significant is None:
        return (
            f"{name} cannot be compared with {reference} ({seeds}: a test needs 2+ seeds on each side "
            "and a spread on at least one)."
        )
    figure = f"{measure.name} {row.vs_reference:+{measure.number_format}}, Holm-corrected p={row.p_holm:.2g}"
    if not row.significant:
        return f"{name} and {reference} are not separable with {seeds} ({figure})."
    return f"{name} {measure.higher if row.vs_reference > 0 else measure.lower} than {reference} ({figure})."


def _versus_reference(
    name: str, difference: float, p: float, p_holm: float, significant: bool | None, reference: str
) -> str:
    if name == reference:
        return "reference"
    if significant is None:
        return f"{difference:+.4f}, p n/a (needs 2+ seeds with a spread)"
    return f"{difference:+.4f}, p={p:.2g}, Holm p={p_holm:.2g}: {'**yes**' if significant else 'no'}"


PER_EPOCH_COLUMNS = 12  # longer runs: epochs.csv only


def _per_epoch_lines(curves: pd.DataFrame, order: pd.Index, out: Path) -> list[str]:
    """epochs.csv (val/acc per configuration and epoch over seeds), and the same as a table in
    report.md for runs of at most PER_EPOCH_COLUMNS epochs."""
    table = per_epoch(curves)
    table.to_csv(out / "epochs.csv", index=False)
    if table.empty or table["epoch"].max() > PER_EPOCH_COLUMNS:
        return []
    cells = table.assign(
        cell=[f"{m:.4f} ± {0.0 if pd.isna(s) else s:.4f}" for m, s in zip(table["mean"], table["std"])]
    )
    wide = cells.pivot(index="configuration", columns="epoch", values="cell").reindex(order)
    wide.columns = [f"epoch {epoch}" for epoch in wide.columns]
    return [
        "## val/acc per epoch",
        "",
        "Mean ± standard deviation over the seeds, after each epoch (the test set's where the sweep validates on it, data.val_from=test).",
        "",
        wide.reset_index().to_markdown(index=False),
        "",
    ]


def _search_lines(choice_file: Path) -> list[str]:
    """What a tuned sweep's search (hydra.sweeper.tune) chose, from its search/choice.json."""
    if not choice_file.exists():
        return []
    choice = json.loads(choice_file.read_text())
    lines = [
        "## Search before the comparison",
        "",
        f"Each configuration trained at the value a search chose for it on {choice['metric']} "
        f"(mean over the search's jobs of each value; the search's own seed and epochs: `{choice_file.parent}`):",
        "",
    ]
    for entry in choice["choices"]:
        group = " ".join(f"{k}={v}" for k, v in entry["group"].items()) or "every configuration"
        scores = ", ".join(f"{c}: {'failed' if m is None else f'{m:.4f}'}" for c, m in entry["mean_scores"].items())
        lines.append(f"- {group}: **{' '.join(entry['chosen'])}** ({scores})")
    return [*lines, ""]


def _speed_lines(done: pd.DataFrame, reference: str, target: float) -> list[str]:
    """Conclusions on the epochs each configuration needed to reach `target` training accuracy,
    against the same reference and with the same corrected test as the test accuracies."""
    speed = compare_with_reference(done, reference, epochs_to_target_measure(target))
    comparisons = int(speed["p_holm"].notna().sum())
    return [
        f"Epochs to a training accuracy of {target:g}, against the same reference: two-sided Welch t-tests over the "
        f"seeds, Holm-Bonferroni corrected for {comparisons} comparison{'s' if comparisons != 1 else ''} (a family of "
        "its own); a configuration where a seed never reached the target is not tested.",
        "",
        *[f"- {sentence}" for sentence in speed["conclusion"].drop(reference)],
        "",
    ]


def write_report(
    sweep_dir: str | Path,
    output_dir: str | Path | None = None,
    train_acc_target: float | None = None,
    more: tuple[str | Path, ...] = (),
) -> Path:
    """report.csv, jobs.csv, report.md, val_acc.png, train_acc.png and test_acc.png, in output_dir
    (default: the sweep dir). With train_acc_target, the table gives the epochs each
    configuration took to reach that training accuracy (e.g. 0.75: the AlexNet paper's 25%
    training error). `more`: sweeps that add seeds to the first (load_sweep)."""
    sweep_dir = Path(sweep_dir)
    out = Path(output_dir) if output_dir else sweep_dir
    jobs, curves, common = load_sweep(sweep_dir, more)
    out.mkdir(parents=True, exist_ok=True)
    if train_acc_target is not None:
        jobs["epochs_to_target"] = jobs["job"].map(epochs_to_train_acc(curves, train_acc_target))
    table = summarize_sweep(jobs)
    jobs.to_csv(out / "jobs.csv", index=False)
    table.to_csv(out / "report.csv")

    failures = int((jobs["status"] == "failed").sum())
    lines = [
        f"# Sweep {' + '.join(map(str, (sweep_dir, *more)))}",
        "",
        f"{len(jobs)} jobs, {failures} failed; common overrides: `{' '.join(common) or 'none'}`.",
        "",
    ]
    if not table.empty:
        shown = table.copy()
        for metric in [m for m in ("test_acc", "val_acc", "test_acc_top5", "val_acc_top5") if f"{m}_mean" in shown]:
            shown[metric.replace("_", " ")] = [
                f"{m:.4f} ± {s:.4f}" for m, s in zip(shown.pop(f"{metric}_mean"), shown.pop(f"{metric}_std"))
            ]
        if train_acc_target is not None:
            shown[f"epochs to train acc {train_acc_target:g}"] = [
                (f"{m:.1f} ± {0.0 if pd.isna(s) else s:.1f}" if reached else "not reached")
                + (f" ({reached}/{runs} runs)" if reached < runs else "")
                for m, s, reached, runs in zip(
                    shown.pop("to_target_mean"), shown.pop("to_target_std"), shown.pop("to_target_runs"), shown["runs"]
                )
            ]
        if "vs_reference" in shown:
            shown["vs reference"] = [
                _versus_reference(name, d, p, holm, sig, table.index[0])
                for name, d, p, holm, sig in zip(
                    shown.index,
                    shown.pop("vs_reference"),
                    shown.pop("p_welch"),
                    shown.pop("p_holm"),
                    shown.pop("significant"),
                )
            ]
            for column in ("seeds", "reference_seeds", "conclusion"):
                shown.pop(column)
        for layer in sorted({name.split("/")[0] for name in shown.columns if LRN_DIVISOR.fullmatch(name)}):
            median, largest = shown.pop(f"{layer}/divisor_median"), shown.pop(f"{layer}/divisor_max")
            shown[f"{layer} divisor/k^beta: median (max)"] = [
                "" if pd.isna(m) else f"{m:.3f} ({x:.3f})" for m, x in zip(median, largest)
            ]
        shown["params"] = shown["params"].map(lambda n: f"{int(n):,}")
        shown["epochs"] = shown["epochs"].map(lambda e: f"{e:.3g}")  # a mean over seeds where runs stop early
        shown["fit s"] = [
            f"{s:.1f} ({low:.1f}-{high:.1f})"
            for s, low, high in zip(shown.pop("fit_seconds"), shown.pop("fit_min"), shown.pop("fit_max"))
        ]
        lines += [shown.reset_index().to_markdown(index=False), ""] + (
            [SIGNIFICANCE_NOTE, ""] if "vs reference" in shown else []
        )
        lines += _search_lines(sweep_dir / "search" / "choice.json")
        lines += _per_epoch_lines(curves, table.index, out)
        if "conclusion" in table:
            comparisons = int(table["p_holm"].notna().sum())
            lines += [
                "## Conclusions",
                "",
                f"Reference: {table.index[0]}, chosen by validation accuracy. Each sentence comes from a two-sided Welch t-test "
                f"on the test accuracies against the reference, Holm-Bonferroni corrected for {comparisons} comparison"
                f"{'s' if comparisons != 1 else ''} (family-wise error rate {ALPHA}).",
                "",
                *[f"- {sentence}" for sentence in table["conclusion"].iloc[1:]],
                "",
            ]
            if train_acc_target is not None:
                lines += _speed_lines(jobs[jobs["status"] == "completed"], table.index[0], train_acc_target)
        if table["runs"].min() < MIN_SEEDS:
            fewest = f"**Fewer than {MIN_SEEDS} seeds**: {int(table['runs'].min())} per configuration" + (
                "" if table["runs"].nunique() == 1 else " at the fewest"
            )
            if "conclusion" in table:
                fewest += ', so the tests above can separate only differences well beyond the spread over seeds; "not separable" says little here'
            lines += [fewest + ".", ""]
        if any(LRN_DIVISOR.fullmatch(name) for name in table.columns):
            lines += [LRN_NOTE, ""]
        lines += [FIT_NOTE, ""]
    failed = jobs[jobs["status"] == "failed"]
    if not failed.empty:
        lines += (
            ["## Failed jobs", ""] + [f"- job {r.job} ({r.overrides}): {r.error}" for r in failed.itertuples()] + [""]
        )
    plots = []
    about = " ".join(common) or sweep_dir.name  # the second line of each plot's title
    about = about if len(about) <= 80 else about[:79] + "…"
    for metric, target in (("val/acc", None), ("train/acc", train_acc_target)):
        if curves[metric].notna().any():
            title = f"{metric} per epoch\n{about}"
            plots.append(
                (title, save(curves_figure(curves, metric, title, target), out / f"{metric.replace('/', '_')}.png"))
            )
    if "test_acc_mean" in table:
        low = table["test_acc_mean"].min() - 3 * table["test_acc_std"].max() - 0.02
        title = f"test accuracy of the kept checkpoints\n{about}"
        figure = bars_figure(
            table.index,
            table["test_acc_mean"],
            "test accuracy (mean ± std over seeds)",
            title,
            table["test_acc_std"],
            (max(0.0, low), 1.0),
        )
        plots.append((title, save(figure, out / "test_acc.png")))
    if plots:
        lines += ["## Plots", ""] + [f"![{title.splitlines()[0]}]({path.name})\n" for title, path in plots]
    (out / "report.md").write_text("\n".join(lines))
    return out
