"""The README's results table, generated from the committed reports, never typed by hand.

Usage:
    python -m stages.tools.report                  # print the table (markdown)
    python -m stages.tools.report --write README.md   # put it between the README's results markers
    python -m stages.tools.report --check README.md   # exit 1 when the README's table differs from reports/

Rows: the built-in held-out signers (isolated clips) and the built-in test streams, from
`reports/metrics.json` (evaluate); the development set, from `reports/devset.json` (written by
`python -m stages.tools.devset FOLDER --json reports/devset.json`); speed, from
`reports/benchmark.json` (benchmark); the development set cross-validated, from
`reports/devset_cv.json` (`devset FOLDER --folds 5 --json reports/devset_cv.json`), and the stream
figures over several head seeds, from `reports/seeds.json` (`python -m stages.tools.seeds --json
reports/seeds.json`), when present.
Each row names the machine its figures came from and
the study behind it. A report that is missing leaves its row out and says so.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stages.lib.machine import machine_line

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
REPORTS = Path("reports")


def read_report(name: str, reports_dir: Path) -> dict | list | None:
    path = reports_dir / name
    return json.loads(path.read_text()) if path.exists() else None


def clip_row(metrics: dict) -> list[str]:
    return ["Built-in signers, held-out test signers, isolated signs",
            f"top-1 {metrics['test_accuracy']:.3f}, top-3 {metrics['test_top3_accuracy']:.3f} "
            f"({metrics['num_test_clips']} clips; validation top-1 {metrics['val_accuracy']:.3f})",
            metrics.get("machine", "not recorded"), "[recognition](docs/recognition.md)"]


def stream_row(metrics: dict) -> list[str]:
    return ["Built-in test streams, continuous signing with pauses",
            f"sign error rate {metrics['stream_sign_error_rate']:.3f} ({metrics['stream_num_true_signs']} signs), "
            f"{metrics['stream_false_signs_per_minute']:.2f} false signs/min{false_sign_interval(metrics)} "
            f"({metrics['stream_idle_minutes']:g} idle min), median latency "
            f"{metrics['stream_latency_seconds_median']:.2f} s",
            metrics.get("machine", "not recorded"), "[recognition](docs/recognition.md)"]


def false_sign_interval(metrics: dict) -> str:
    interval = metrics.get("stream_false_signs_per_minute_ci95")
    return f" (95 % interval {interval[0]:.2f}-{interval[1]:.2f})" if interval else ""


def fast_stream_row(metrics: dict) -> list[str]:
    return ["Built-in test streams, signing without pauses (gaps 0.1-0.4 s, signs at the file's ends)",
            f"sign error rate {metrics['fast_stream_sign_error_rate']:.3f} ({metrics['fast_stream_num_true_signs']} "
            f"signs), median latency {metrics['fast_stream_latency_seconds_median']:.2f} s",
            metrics.get("machine", "not recorded"), "[recognition](docs/recognition.md)"]


def devset_rows(devset: dict) -> list[list[str]]:
    rows = []
    for row in devset["rows"]:
        rows.append([f"Development set ({devset['dataset']}), {row['row']}",
                     f"test top-1 {row['test_accuracy']:.3f}, top-3 {row['test_top3_accuracy']:.3f} "
                     f"(validation top-1 {row['val_accuracy']:.3f})",
                     devset.get("machine", "not recorded"), "[real clips](docs/real-clips.md)"])
    return rows


# The cross-validated rows on the front page: the defaults and the real-clips preset (the levers and the
# logistic-regression floors stay in docs/real-clips.md).
HEADLINE_CHANGES = ({}, {"backbone.name": "keypoints"})


def cross_validated_rows(devset_cv: dict) -> list[list[str]]:
    return [[f"Development set ({devset_cv['dataset']}), {devset_cv['protocol']}: {row['row']}",
             f"top-1 {row['top1_mean']:.3f} ± {row['top1_sd']:.3f}, top-3 {row['top3_mean']:.3f} ± "
             f"{row['top3_sd']:.3f}", devset_cv.get("machine", "not recorded"), "[real clips](docs/real-clips.md)"]
            for row in devset_cv["rows"]
            if not row["row"].startswith("floor") and not row.get("probe") and row.get("heads", 1) == 1
            and row["changes"] in HEADLINE_CHANGES]


def speed_row(benchmark: dict) -> list[str]:
    return ["Speed: live step (one new frame, TFLite backbone + head over the ring buffer)",
            f"p50 {benchmark['live_step_tflite_ms_p50']:.1f} ms, p95 {benchmark['live_step_tflite_ms_p95']:.1f} ms; "
            f"extraction {benchmark['extract_pipeline_fps_median']:.0f} frames/s",
            machine_line(benchmark), "[performance](docs/performance.md)"]


def seeds_row(seeds: dict) -> list[str]:
    """The stream figures over several head seeds (stages/tools/seeds.py): mean and range of each."""
    figures = seeds["figures"]

    def spread(name: str, pattern: str = "{:.3f}") -> str:
        entry = figures.get(name) or {}
        if entry.get("mean") is None:
            return "–"
        return f"{pattern.format(entry['mean'])} ({pattern.format(entry['min'])}-{pattern.format(entry['max'])})"
    return [f"Built-in test streams over {len(seeds['seeds'])} head seeds ({', '.join(map(str, seeds['seeds']))}): "
            "mean (range)",
            f"sign error rate {spread('stream_sign_error_rate')}, without pauses "
            f"{spread('fast_stream_sign_error_rate')}; false signs/min "
            f"{spread('stream_false_signs_per_minute', '{:.2f}')}; "
            f"median latency {spread('stream_latency_seconds_median', '{:.2f}')} s; clip top-1 "
            f"{spread('test_accuracy')}", seeds.get("machine", "not recorded"), "[recognition](docs/recognition.md)"]


def results_table(reports_dir: Path = REPORTS) -> str:
    """The markdown table of every report present, with a note for any that is missing."""
    rows, missing = [], []
    metrics = read_report("metrics.json", reports_dir)
    if metrics:
        rows += [clip_row(metrics), stream_row(metrics)]
        if metrics.get("fast_stream_sign_error_rate") is not None:
            rows.append(fast_stream_row(metrics))
        seeds = read_report("seeds.json", reports_dir)
        if seeds:
            rows.append(seeds_row(seeds))
    else:
        missing.append("metrics.json (run `dvc repro`)")
    devset = read_report("devset.json", reports_dir)
    if devset:
        rows += devset_rows(devset)
    else:
        missing.append("devset.json (`python -m stages.tools.devset FOLDER --json reports/devset.json`)")
    devset_cv = read_report("devset_cv.json", reports_dir)
    if devset_cv:
        rows += cross_validated_rows(devset_cv)
    benchmark = read_report("benchmark.json", reports_dir)
    if benchmark:
        rows.append(speed_row(benchmark))
    else:
        missing.append("benchmark.json (`dvc repro benchmark`)")
    lines = ["| data | figure | machine | study |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if missing:
        lines += ["", "Not measured yet: " + "; ".join(missing) + "."]
    return "\n".join(lines)


def replace_between_markers(text: str, table: str) -> str:
    if START_MARKER not in text or END_MARKER not in text:
        raise ValueError(f"the file has no {START_MARKER} ... {END_MARKER} block to hold the results table")
    before, rest = text.split(START_MARKER, 1)
    _, after = rest.split(END_MARKER, 1)
    return f"{before}{START_MARKER}\n{table}\n{END_MARKER}{after}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=REPORTS, help="the reports folder (default: reports)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="README", help="put the table between the file's markers")
    action.add_argument("--check", type=Path, metavar="README", help="exit 1 when the file's table is stale")
    arguments = parser.parse_args(argv)
    table = results_table(arguments.reports)
    if arguments.write:
        arguments.write.write_text(replace_between_markers(arguments.write.read_text(), table))
    elif arguments.check:
        text = arguments.check.read_text()
        if replace_between_markers(text, table) != text:
            print(f"{arguments.check}'s results table differs from {arguments.reports}/: run "
                  f"`python -m stages.tools.report --write {arguments.check}`", file=sys.stderr)
            raise SystemExit(1)
        print(f"{arguments.check}'s results table matches {arguments.reports}/")
    else:
        print(table)


if __name__ == "__main__":
    main()
