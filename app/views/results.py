"""Page "Results": the pipeline's metrics, confusion matrix, per-class table, curves, benchmark, experiments.

Usage:
    streamlit run app/streamlit_app.py        # then "Results"

Everything is read from reports/ (paths from params.yaml) and, best effort,
from `dvc exp show`; whatever is missing is named, never a crash.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.reports import dvc_experiments, numeric_table, read_csv, read_json, read_training_curves
from app.settings import AppSettings, load_settings

DEFAULT_BENCHMARK_PATH = "reports/benchmark.json"   # until params.yaml names it in `paths:`


def path_or_default(settings: AppSettings, name: str, default: str) -> Path:
    return settings.path(name) if name in settings.params["paths"] else settings.root / default


@st.cache_data(ttl=60, show_spinner="Reading the DVC experiment table…")
def cached_experiments(root: str):
    return dvc_experiments(Path(root))


def metric_row(settings: AppSettings, metrics: dict, prefix: str, stream_prefix: str) -> None:
    """One row of headline figures for a split: clips, then continuous streams."""
    top_k = settings.top_k
    figures = [("Accuracy", metrics.get(f"{prefix}accuracy"), "{:.1%}"),
               (f"Top-{top_k} accuracy", metrics.get(f"{prefix}top{top_k}_accuracy"), "{:.1%}"),
               ("Macro F1", metrics.get(f"{prefix}macro_f1"), "{:.3f}"),
               ("Clips", metrics.get(f"num_{prefix}clips"), "{}"),
               ("Stream sign error rate", metrics.get(f"{stream_prefix}sign_error_rate"), "{:.1%}"),
               ("Fast-stream sign error rate", metrics.get(f"{stream_prefix.replace('stream_', 'fast_stream_')}"
                                                            "sign_error_rate"), "{:.1%}"),
               ("False signs / idle minute", metrics.get(f"{stream_prefix}false_signs_per_minute"), "{:.2f}"),
               ("Median latency", metrics.get(f"{stream_prefix}latency_seconds_median"), "{:.2f} s")]
    for column, (label, value, pattern) in zip(st.columns(len(figures)), figures):
        column.metric(label, pattern.format(value) if value is not None else "–")


def show_headline_metrics(settings: AppSettings, metrics: dict) -> None:
    st.markdown("**Validation** (pick experiments by these)")
    metric_row(settings, metrics, "val_", "val_stream_")
    st.markdown("**Test** (held out for the final report: never tune on it)")
    metric_row(settings, metrics, "test_", "stream_")
    details = [f"{metrics['num_classes']} classes" if "num_classes" in metrics else "",
               f"backbone weights: {metrics['backbone_weights']}" if "backbone_weights" in metrics else "",
               f"fine-tuned end to end: {metrics['finetune_enabled']}" if "finetune_enabled" in metrics else "",
               f"precision: {metrics['precision_policy']}" if "precision_policy" in metrics else ""]
    st.caption(" · ".join(detail for detail in details if detail))
    with st.expander("All figures in " + settings.relative(settings.path("metrics"))):
        st.json(metrics)


def show_curves(title: str, plots_dir: Path, settings: AppSettings) -> bool:
    curves = read_training_curves(plots_dir)
    if not curves:
        return False
    st.markdown(f"**{title}** (`{settings.relative(plots_dir)}`)")
    for column, (metric, table) in zip(st.columns(len(curves)), sorted(curves.items())):
        with column:
            st.caption(metric)
            st.line_chart(table, x_label="epoch", height=220)
    return True


def show_benchmark(settings: AppSettings) -> None:
    st.subheader("Benchmark")
    path = path_or_default(settings, "benchmark", DEFAULT_BENCHMARK_PATH)
    benchmark = read_json(path)
    if benchmark is None:
        st.caption(f"No benchmark yet (`{settings.relative(path)}` is written by the benchmark stage).")
        return
    st.dataframe(numeric_table(benchmark), hide_index=True)
    with st.expander("Raw " + settings.relative(path)):
        st.json(benchmark)


def show_experiments(settings: AppSettings) -> None:
    st.subheader("Experiments")
    table, note = cached_experiments(str(settings.root))
    if table is None:
        st.caption(f"DVC experiment table unavailable: {note}.")
        return
    st.caption(note + " · run more with `dvc exp run -S train.learning_rate=3e-4`")
    st.dataframe(table, hide_index=True)


def render() -> None:
    settings = load_settings()
    st.title("Results")
    metrics = read_json(settings.path("metrics"))
    if metrics is None:
        st.info(f"No metrics yet (`{settings.relative(settings.path('metrics'))}`): run `dvc repro` first.")
    else:
        show_headline_metrics(settings, metrics)
        if metrics.get("advice"):                     # evaluate's hint: when to switch to the real-clips preset
            st.warning(metrics["advice"], icon=":material/lightbulb:")

    matrix_column, table_column = st.columns([1, 1])
    with matrix_column:
        st.subheader("Confusion matrix (test split)")
        confusion_png = settings.path("confusion_png")
        if confusion_png.exists():
            st.image(str(confusion_png))
        else:
            st.caption(f"`{settings.relative(confusion_png)}` not found.")
    with table_column:
        st.subheader("Per class")
        per_class = read_csv(settings.path("per_class"))
        if per_class is None:
            st.caption(f"`{settings.relative(settings.path('per_class'))}` not found.")
        else:
            st.dataframe(per_class, hide_index=True)

    timeline = settings.path("stream_timeline_png") if "stream_timeline_png" in settings.params["paths"] else None
    if timeline is not None and timeline.exists():
        st.subheader("A continuous test stream")
        st.image(str(timeline))
        st.caption("Each sign's probability over a stream of held-out signers; true signs shaded, the signs the "
                   "spotter emitted as vertical lines, the threshold dashed.")

    st.subheader("Training curves")
    shown_head = show_curves("Head on cached embeddings", settings.path("train_logs") / "plots" / "metrics", settings)
    shown_finetune = show_curves("End-to-end fine-tuning", settings.path("finetune_logs") / "plots" / "metrics",
                                 settings)
    if not (shown_head or shown_finetune):
        st.caption("No training curves found (dvclive writes them under reports/ while training).")
    finetune_summary = read_json(settings.path("finetune_logs") / "summary.json")
    if finetune_summary:
        st.caption("Fine-tune stage: " + ", ".join(f"{key} {value}" for key, value in finetune_summary.items()))

    show_benchmark(settings)
    show_experiments(settings)
