"""Page "Model": choose among the served models the pipeline wrote; see their labels, params and metrics.

Usage:
    streamlit run app/streamlit_app.py        # then "Model"

Only models found under the models folder (a .keras file with a full-graph
card beside it) are offered. Model files cannot be uploaded, on purpose:
loading a Keras file runs what it contains, so an untrusted one can run code.
The newest model trained from your recordings (kept by the Train page under
`models/recordings/<run>/`) is offered on top, one click from the Live page.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.reports import is_number, metric_order, read_json
from app.settings import AppSettings, load_settings
from app.state import available_models, select_model, selected_model_path, show_no_model
from app.training import KEPT_MODELS_FOLDER
from stages.lib.served import load_bundle

MODEL_CHOICE_KEY = "model_choice"      # the selectbox's value: a model's path as shown (relative to the root)

UNTRUSTED_MODELS_NOTE = (
    "Only models produced by this pipeline under `{models_dir}/` are offered. Uploading model files is "
    "deliberately not supported: loading a Keras model file can execute code it contains, so never load "
    "one from an untrusted source. To serve another model, put its bundle (`.keras` and card `.json`) "
    "under `{models_dir}/` yourself."
)


def evaluation_metrics_for(settings: AppSettings, model_path: Path, card: dict) -> tuple[dict | None, str]:
    """The evaluate stage's figures for the pipeline's model; a card's own figures for another one."""
    if model_path == settings.default_model:
        return read_json(settings.path("metrics")), settings.relative(settings.path("metrics"))
    if isinstance(card.get("metrics"), dict):
        return card["metrics"], "its card"
    return None, ""


def show_card(settings: AppSettings, model_path: Path) -> None:
    bundle = load_bundle(model_path)             # reads the card only; the model itself loads elsewhere
    card = bundle.card
    size_column, frames_column, rate_column, classes_column = st.columns(4)
    size_column.metric("Image size", f"{card['image_size']} px")
    frames_column.metric("Window", f"{card['seq_len']} frames", f"{card['window_seconds']:.1f} s",
                         delta_color="off", delta_arrow="off")
    rate_column.metric("Sampling rate", f"{float(card['sample_fps']):g} frames/s")
    classes_column.metric("Classes", len(card["labels"]),
                          f"no-sign: {card['no_sign_label']}" if card.get("no_sign_label") else "no no-sign class",
                          delta_color="off", delta_arrow="off")
    st.markdown("**Labels** (output order): " + ", ".join(f"`{label}`" for label in card["labels"]))
    st.caption(" · ".join(f"{name}: {card[key]}" for name, key in
                          (("backbone", "backbone"), ("weights", "weights_source"),
                           ("trained in", "precision_policy_trained"), ("colour order", "color_order"))
                          if key in card))
    show_spotting(settings, bundle)
    metrics, source = evaluation_metrics_for(settings, model_path, card)
    st.subheader("Validation and test metrics")
    if metrics is None:
        st.caption("No metrics for this model (the evaluate stage scores the pipeline's model).")
    else:
        headline = sorted(((key, value) for key, value in metrics.items() if is_number(value)
                           and key.startswith(("val_", "test_", "stream_", "num_"))),
                          key=lambda item: metric_order(item[0]))
        st.dataframe(pd.DataFrame(headline, columns=["figure", "value"]), hide_index=True)
        st.caption(f"From {source}.")
    params_column, durations_column = st.columns(2)
    with params_column:
        st.subheader("Training params")
        st.json(card.get("train_params", {}))
    with durations_column:
        st.subheader("Training clips")
        st.caption("How long the training clips are at the sampling rate, and the share the window holds whole.")
        st.json(card.get("train_clip_durations", {}))
        st.caption("Fine-tuned end to end: " + ("yes" if card.get("finetuned") else "no"))
    with st.expander("Whole card"):
        st.json(card)


def show_spotting(settings: AppSettings, bundle) -> None:
    """The threshold the Live page starts at for this model, and where it came from (the calibrate stage)."""
    st.caption(f"Spotting threshold {settings.spotting_for(bundle).threshold:g}{settings.spotting_origin(bundle)}.")


def render() -> None:
    settings = load_settings()
    st.title("Model")
    models = available_models(settings)
    if not models:
        show_no_model(settings)
        return
    st.warning(UNTRUSTED_MODELS_NOTE.format(models_dir=settings.relative(settings.models_dir)), icon=":material/lock:")
    current = selected_model_path(settings)
    names = [settings.relative(path) for path in models]
    offer_newest_recordings_model(settings, models, current)
    if st.session_state.get(MODEL_CHOICE_KEY) not in names:
        st.session_state[MODEL_CHOICE_KEY] = settings.relative(current)
    chosen_name = st.selectbox("Served model", names, key=MODEL_CHOICE_KEY,
                               help="Used by the Live, Upload and Gallery pages of this browser session.")
    chosen = models[names.index(chosen_name)]
    select_model(chosen)
    show_card(settings, chosen)


def recordings_models(settings: AppSettings, models: list[Path]) -> list[Path]:
    """Models the Train page kept (<models>/recordings/<run>/), newest first (run names sort by time)."""
    kept = settings.models_dir / KEPT_MODELS_FOLDER
    return sorted((path for path in models if path.parent.parent == kept), key=lambda path: path.parent.name,
                  reverse=True)


def use_model(settings: AppSettings, model_path: Path) -> None:
    """The button's callback: this model for the session's Live, Upload and Gallery pages, and the selectbox."""
    select_model(model_path)
    st.session_state[MODEL_CHOICE_KEY] = settings.relative(model_path)


def offer_newest_recordings_model(settings: AppSettings, models: list[Path], current: Path) -> None:
    newest = next(iter(recordings_models(settings, models)), None)
    if newest is None or newest == current:
        return
    card = load_bundle(newest).card
    accuracy = (card.get("metrics") or {}).get("test_accuracy")
    figure = f", test accuracy {accuracy:.0%}" if is_number(accuracy) else ""
    with st.container(border=True):
        st.markdown(f":material/fiber_new: **Trained on your recordings:** `{settings.relative(newest)}` "
                    f"({len(card['labels'])} classes{figure}).")
        st.button("Use it on the Live page", type="primary", icon=":material/videocam:", on_click=use_model,
                  args=(settings, newest))
