"""Readers for what the pipeline wrote under reports/, and for DVC's experiment table.

Usage:
    from app.reports import read_json, read_training_curves, dvc_experiments
    metrics = read_json(settings.path("metrics"))                # None when absent or unreadable
    curves = read_training_curves(settings.path("train_logs") / "plots" / "metrics")
    curves["loss"]                                               # DataFrame: index step, columns train, eval
    table, note = dvc_experiments(settings.root)                 # (None, why) when dvc is unavailable

Every reader returns None (or an empty result) for a missing or broken file:
the Results page shows what exists and says what does not.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

DVC_TIMEOUT_SECONDS = 30      # `dvc exp show` takes ~1 s here; a hung lock must not hang the page
HEADLINE_METRICS_FILE = "metrics.json"


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError):
        return None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_table(values: dict, name_column: str = "figure") -> pd.DataFrame:
    """The numbers of a nested dict as a two-column table (figure, value), nesting joined by dots."""
    rows = [(key, value) for key, value in flatten(values).items() if is_number(value)]
    return pd.DataFrame(rows, columns=[name_column, "value"])


def read_training_curves(plots_dir: Path) -> dict[str, pd.DataFrame]:
    """dvclive's TSVs (`<plots_dir>/<subset>/<metric>.tsv`, columns step and metric) by metric.

    Returns {metric: DataFrame indexed by step, one column per subset (train, eval)}.
    """
    plots_dir = Path(plots_dir)
    series: dict[str, dict[str, pd.Series]] = {}
    for tsv in sorted(plots_dir.rglob("*.tsv")) if plots_dir.is_dir() else []:
        try:
            table = pd.read_csv(tsv, sep="\t")
        except (OSError, ValueError):
            continue
        if "step" not in table.columns or len(table.columns) < 2:
            continue
        subset = tsv.parent.relative_to(plots_dir).as_posix()
        value_column = [column for column in table.columns if column != "step"][-1]
        series.setdefault(tsv.stem, {})[subset if subset != "." else "value"] = \
            table.set_index("step")[value_column]
    return {metric: pd.DataFrame(by_subset) for metric, by_subset in series.items()}


def run_dvc_exp_show(root: Path, timeout: float = DVC_TIMEOUT_SECONDS) -> list:
    """`dvc exp show --json` in `root`; raises RuntimeError with a short reason on any failure."""
    if not (Path(root) / ".dvc").is_dir():
        raise RuntimeError(f"{root} is not a DVC repository")
    try:
        result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`dvc exp show` took longer than {timeout:.0f} s") from None
    except OSError as error:
        raise RuntimeError(f"cannot run dvc ({error})") from None
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"`dvc exp show` failed: {last_line}")
    try:
        return json.loads(result.stdout or "[]")
    except ValueError:
        raise RuntimeError("`dvc exp show --json` did not print JSON") from None


def experiment_row(entry: dict) -> dict[str, Any]:
    """One row of the table from one `dvc exp show --json` entry (workspace, commit or experiment)."""
    data = entry.get("data") or {}
    revision = str(entry.get("rev", ""))
    short_revision = revision[:7] if len(revision) == 40 else revision          # a commit hash, or "workspace"
    row: dict[str, Any] = {"experiment": entry.get("name") or short_revision,
                           "created": (data.get("timestamp") or "")[:19]}
    # The evaluate stage's headline file (reports/metrics.json) first, then e.g. reports/train/metrics.json.
    metrics: dict[str, Any] = {}
    for file_name, content in sorted((data.get("metrics") or {}).items(), key=lambda item: item[0].count("/")):
        if Path(file_name).name != HEADLINE_METRICS_FILE or not isinstance(content, dict):
            continue
        prefix = "" if Path(file_name).parent.name == "reports" else f"{Path(file_name).parent.name}."
        for key, value in flatten(content.get("data") or {}).items():
            if is_number(value):
                metrics[prefix + key] = value
    # Validation first: experiments are picked on it; test figures are for the final report.
    row.update(sorted(metrics.items(), key=lambda item: metric_order(item[0])))
    for content in (data.get("params") or {}).values():
        for key, value in flatten((content or {}).get("data") or {}).items():
            if not key.startswith(("paths.", "app.")):
                row["param " + key] = value
    return row


def metric_order(name: str) -> int:
    """Where a metric column goes: validation figures, then training curves' last values, then test, then the rest."""
    if name.startswith("val_") or ".val_" in name or "eval." in name:
        return 0
    if name.startswith("train."):
        return 1
    if name.startswith(("test_", "stream_")):
        return 2
    return 3


def experiment_rows(shown: list) -> list[dict[str, Any]]:
    rows = []
    for entry in shown if isinstance(shown, list) else []:
        rows.append(experiment_row(entry))
        for experiment in entry.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                rows.append(experiment_row({**revision, "name": revision.get("name") or experiment.get("name")}))
    return rows


def dvc_experiments(root: Path) -> tuple[pd.DataFrame | None, str]:
    """(table of experiments: metrics and the params that differ, note); (None, why) when unavailable."""
    try:
        rows = experiment_rows(run_dvc_exp_show(root))
    except RuntimeError as error:
        return None, str(error)
    if not rows:
        return None, "no experiments recorded"
    table = pd.DataFrame(rows)
    param_columns = [column for column in table.columns if column.startswith("param ")]
    constant = [column for column in param_columns
                if table[column].astype(str).nunique(dropna=False) <= 1 and len(table) > 1]
    table = table.drop(columns=constant)
    note = (f"{len(table)} rows from `dvc exp show`" +
            (f"; {len(constant)} params equal in every row are hidden" if constant else ""))
    return table, note
