"""The benchmark's repeated runs as figures: per way the median and the min-max spread of each
figure over the repeats, as a markdown table, a section of docs/benchmarks.md, a chart and JSON."""

import json
import math
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path

import lightning as L
import torch

from .measure import LIGHTNING, RESIDENT_LOOP, Result


def spread(values: Sequence[float], text: Callable[[float], str]) -> str:
    """'median (min-max)' of `values`, or the one value."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return text(values[0])
    return f"{text(statistics.median(values))} ({text(min(values))}-{text(max(values))})"


def by_way(results: Sequence[Result]) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {}
    for result in results:
        runs.setdefault(result.way, []).append(result)
    return runs


def median(results: Sequence[Result], way: str, figure: Callable[[Result], float]) -> float:
    """The median of `figure` over the runs of `way` (NaN without any)."""
    values = [figure(r) for r in results if r.way == way]
    return statistics.median(values) if values else math.nan


def median_ratio(results: Sequence[Result], way: str, base_way: str) -> float:
    """The median over repeats of `way`'s images/s over `base_way`'s in the same repeat."""
    runs = by_way(results)
    ratios = _ratios(runs.get(way, []), runs.get(base_way))
    return statistics.median(ratios) if ratios else math.nan


def _ratios(runs: list[Result], base: list[Result] | None) -> list[float]:
    """images/s of each repeat over the base way's in the same repeat (interleaved neighbours)."""
    base_of = {r.repeat: r for r in base or []}
    return [r.images_per_second / base_of[r.repeat].images_per_second for r in runs if r.repeat in base_of]


def to_markdown(results: Sequence[Result], target: float | None) -> str:
    """One row per way: the median (min-max) over its repeats of each figure."""
    runs_by_way = by_way(results)
    base = runs_by_way.get(RESIDENT_LOOP)
    head = [
        "way",
        "repeats",
        "images/s",
        "s/epoch",
        "train s",
        f"epochs; s to val {target}" if target else None,
        "final val acc",
        "test acc",
        "peak GPU MiB",
        "images/s vs resident loop",
    ]
    head = [h for h in head if h]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for way, runs in runs_by_way.items():
        row = [
            way,
            str(len(runs)),
            spread([r.images_per_second for r in runs], "{:,.0f}".format),
            spread([r.steady_epoch_seconds for r in runs], "{:.3f}".format),
            spread([sum(r.epoch_seconds) for r in runs], "{:.2f}".format),
            *([_time_to_target(runs, target)] if target else []),
            spread([r.val_acc[-1] for r in runs], "{:.4f}".format),
            spread([r.test_acc for r in runs], "{:.4f}".format),
            spread([r.peak_memory_mib for r in runs], "{:,.0f}".format),
            spread(_ratios(runs, base), "{:.2f}x".format) if base else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _time_to_target(runs: list[Result], target: float) -> str:
    reached = [r.time_to(target) for r in runs]
    reached = [r for r in reached if r is not None]
    if not reached:
        return "not reached"
    text = f"{spread([e for e, _ in reached], '{:.0f}'.format)}; {spread([s for _, s in reached], '{:.2f}'.format)}"
    return text + (f" ({len(reached)}/{len(runs)} runs reached it)" if len(reached) < len(runs) else "")


def machine(device: torch.device, precision: str) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"{what}; torch {torch.__version__}, lightning {L.__version__}, precision {precision}"


def section(
    name: str, results: Sequence[Result], machine_text: str, command: str, target: float | None, chart: str
) -> str:
    runs = by_way(results)
    repeats = min(len(r) for r in runs.values())
    switches = results[0].switches
    notes = [
        f"### {name}",
        "",
        f"Measured {date.today().isoformat()} on {machine_text}.",
        "",
        f"Command: `{command}`",
        "",
        to_markdown(results, target),
        "",
        f"Each way ran {repeats} times, interleaved in alternating order ({', '.join(runs)}, then the "
        "reverse, ...); each cell is the median over the runs with the min-max spread in brackets. "
        "s/epoch is the median training epoch after the first; train s sums all epochs; every way "
        "validates after every epoch with its clock stopped. The ratio compares each run with the "
        "resident loop's run of the same repeat. All ways ran under the same switches: "
        + ", ".join(f"{k}={v}" for k, v in switches.items())
        + ".",
    ]
    fits = [r.fit_seconds for r in runs.get(LIGHTNING, []) if not math.isnan(r.fit_seconds)]
    if fits:
        notes.append(
            f"The whole `train.py` fit of the lightning way took {spread(fits, '{:.2f}'.format)} s "
            "(everything in trainer.fit: validation, checkpoints, logging)."
        )
    notes += ["", f"![{name}]({chart})"]
    return "\n".join(notes)


def bar_chart(results: Sequence[Result], title: str, path: Path) -> None:
    """Median training images/s of each way, the bars' whiskers the min-max over the repeats."""
    from classic_cnns.plotting import plt, save

    runs = by_way(results)
    ways = list(runs)[::-1]
    speeds = [[r.images_per_second for r in runs[way]] for way in ways]
    medians = [statistics.median(s) for s in speeds]
    errors = [[m - min(s) for m, s in zip(medians, speeds)], [max(s) - m for m, s in zip(medians, speeds)]]
    fig, ax = plt.subplots(figsize=(6, 2.4))
    ax.barh(ways, medians, xerr=errors, capsize=3, color="tab:blue")
    ax.set_xlabel(f"training images/s (steady epochs; median, min-max of {min(map(len, speeds))} runs)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi=120)


def write_section(doc: Path, name: str, body: str) -> None:
    """Put `body` between this benchmark's markers in `doc`, replacing an earlier run of it."""
    start, end = f"<!-- benchmark: {name} -->", f"<!-- end of benchmark: {name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def results_json(results: Sequence[Result]) -> str:
    return json.dumps([asdict(r) | {"images_per_second": r.images_per_second} for r in results], indent=2)


def results_from_json(text: str) -> list[Result]:
    return [Result(**{k: v for k, v in row.items() if k != "images_per_second"}) for row in json.loads(text)]
