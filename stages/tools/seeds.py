"""The test figures over several head seeds: mean and range, so one seed's luck is not read as a result.

Usage:
    python -m stages.tools.seeds                          # head seeds 42 (base.seed), 1 and 2
    python -m stages.tools.seeds --seeds 42,1,2,3 --json reports/seeds.json
    python -m stages.tools.seeds --set train.motion_channels=true     # a lever, judged over the same seeds

The head's seed alone moves the stream figures by a few signs (docs/performance.md). Each seed is
`dvc exp run --temp --name seed-<n> -S train.seed=<n> evaluate`: a DVC experiment like any other (it shows in
`dvc exp show`), which re-runs train and what follows, never generate, sample or extract, and
leaves the workspace as it was. Its metrics are read back from the experiment's commit
(`dvc.api.read`); `--json` writes each figure's per-seed values, mean, min and max, which
`python -m stages.tools.report` puts on the README's front page.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from stages.lib.machine import machine_line
from stages.lib.params import load_params

# The figures issue 34 judges by, each a number (or None where the dataset has no such streams).
# Validation first: a lever is chosen on those; the test figures are for the report.
SEED_FIGURES = ("val_accuracy", "val_stream_sign_error_rate", "val_fast_stream_sign_error_rate",
                "val_stream_false_signs_per_minute", "test_accuracy", "test_top3_accuracy", "stream_sign_error_rate",
                "stream_false_signs_per_minute", "stream_latency_seconds_median", "fast_stream_sign_error_rate",
                "fast_stream_latency_seconds_median")
DEFAULT_SEEDS = "42,1,2"


def run_seed(seed: int, root: Path, settings: list[str] = ()) -> tuple[dict, float]:
    """One head seed (and `settings`, each key=value as dvc exp run -S takes it) as a temporary DVC experiment:
    (its metrics.json, seconds)."""
    started = time.perf_counter()
    name = f"seed-{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    overrides = [item for setting in settings for item in ("-S", setting)]
    # Up to evaluate: the benchmark times a reference model, the same for every seed.
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name, "-S", f"train.seed={seed}",
               *overrides, "evaluate"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    import dvc.api
    metrics_path = load_params(root / "params.yaml")["paths"]["metrics"]
    return json.loads(dvc.api.read(metrics_path, repo=str(root), rev=name)), time.perf_counter() - started


def summarise_seeds(per_seed: dict[int, dict]) -> dict:
    """{figure: {"values": {seed: value}, "mean", "min", "max"}} over the seeds that have the figure."""
    summary = {}
    for figure in SEED_FIGURES:
        values = {seed: metrics.get(figure) for seed, metrics in per_seed.items()}
        present = [value for value in values.values() if value is not None]
        summary[figure] = {"values": values, "mean": round(sum(present) / len(present), 4) if present else None,
                           "min": min(present) if present else None, "max": max(present) if present else None}
    return summary


def seeds_table(summary: dict) -> str:
    lines = ["| figure | mean | range |", "|---|---|---|"]
    for figure, entry in summary.items():
        if entry["mean"] is not None:
            lines.append(f"| {figure} | {entry['mean']:.3f} | {entry['min']:.3f}-{entry['max']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"head seeds, comma-separated (default {DEFAULT_SEEDS})")
    parser.add_argument("--json", type=Path, help="write the per-seed figures and their mean and range here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param for every seed's run, as dvc exp run -S (repeatable)")
    arguments = parser.parse_args(argv)
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    if len(seeds) < 2:
        raise SystemExit("give at least two seeds: a range needs two")
    root = Path.cwd()
    per_seed, seconds = {}, {}
    for seed in seeds:
        per_seed[seed], seconds[seed] = run_seed(seed, root, arguments.set)
        print(f"seed {seed}: " + ", ".join(f"{figure} {per_seed[seed].get(figure)}" for figure in SEED_FIGURES)
              + f" ({seconds[seed]:.0f} s)", flush=True)
    summary = summarise_seeds(per_seed)
    print(seeds_table(summary))
    if arguments.json:
        record = {"seeds": seeds, "settings": arguments.set, "machine": machine_line(),
                  "seconds": {seed: round(value) for seed, value in seconds.items()}, "figures": summary}
        arguments.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
