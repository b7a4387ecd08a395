"""The model shared by every browser session, and which model this session has chosen.

Usage:
    from app.state import current_model
    shared = current_model(settings)          # None (after showing how to get one) when none exists
    with shared.lock:
        probabilities = shared.bundle.predict_window_fast(window)   # (seq_len, H, W, 3) uint8 -> (classes,)

One `SharedModel` per model file and process (`st.cache_resource`): every
browser session, every page and every WebRTC frame thread uses the same one.
Its TFLite interpreters and Keras graph are not safe to call from several
threads at once, so every call into them holds `shared.lock`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from app.settings import AppSettings
from stages.lib.served import ServedBundle, bundle_version, find_bundles, load_bundle

SELECTED_MODEL_KEY = "selected_model"   # st.session_state: the chosen model's path (str)


@dataclass
class SharedModel:
    bundle: ServedBundle
    version: tuple = ()           # stages.lib.served.bundle_version of the files it was loaded from
    # Held around every call into the bundle's interpreters and graph: browser
    # sessions run in their own script threads and each webcam in its own frame thread.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_shared_model(model_path: str, version: tuple) -> SharedModel:
    """Load once per process and bundle version (`bundle_version`: every file of the bundle, so a re-trained
    model and a re-calibrated threshold alike reload)."""
    return build_shared_model(model_path, version)


def build_shared_model(model_path: str, version: tuple) -> SharedModel:
    bundle = load_bundle(model_path)
    # Build the TFLite interpreters now rather than inside the first webcam frame.
    bundle.frame_engine, bundle.head_engine  # noqa: B018 (cached properties: the access builds them)
    return SharedModel(bundle, version)


@st.cache_resource(show_spinner="Loading the model for uploads…", max_entries=2)
def load_upload_model(model_path: str, version: tuple) -> SharedModel:
    """A second copy of a model, with interpreters and a lock of its own, for the Upload page: a long upload
    runs the backbone over every frame, and holding the live path's lock for that would freeze every
    webcam (streamlit-webrtc drops a frame callback after 10 s)."""
    return build_shared_model(model_path, version)


def model_for_uploads(shared: SharedModel) -> SharedModel:
    """The upload copy of `shared`'s model, at the same version."""
    return load_upload_model(str(shared.bundle.model_path), shared.version)


def available_models(settings: AppSettings) -> list[Path]:
    """Served models the pipeline wrote under the models folder; never files from elsewhere."""
    if not settings.models_dir.is_dir():
        return []
    return find_bundles(settings.models_dir)


def selected_model_path(settings: AppSettings) -> Path | None:
    """This session's choice when it still exists; else the pipeline's model; else the first found."""
    models = available_models(settings)
    if not models:
        return None
    chosen = st.session_state.get(SELECTED_MODEL_KEY)
    for candidate in ([Path(chosen)] if chosen else []) + [settings.default_model]:
        if candidate in models:
            return candidate
    return models[0]


def select_model(model_path: Path) -> None:
    st.session_state[SELECTED_MODEL_KEY] = str(model_path)


def show_no_model(settings: AppSettings) -> None:
    """The friendly state before the pipeline has produced a model."""
    st.info(
        f"No trained model yet: nothing served under `{settings.relative(settings.models_dir)}/`.\n\n"
        "Run `dvc repro` in the repository first (a few minutes on two CPU cores at the "
        "defaults; the README quotes measured times), then reload this page.",
        icon=":material/build:",
    )


def current_model(settings: AppSettings) -> SharedModel | None:
    """The session's chosen model, loaded (once per process); None after showing the no-model state."""
    model_path = selected_model_path(settings)
    if model_path is None:
        show_no_model(settings)
        return None
    try:
        return load_shared_model(str(model_path), bundle_version(model_path))
    except Exception as error:  # a half-written or foreign file: say so instead of a traceback
        st.error(f"Cannot load the model `{settings.relative(model_path)}`: {error}\n\n"
                 "Re-create it with `dvc repro`.")
        return None
