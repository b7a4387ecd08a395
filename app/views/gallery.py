"""Page "Gallery": clips of held-out signers from the built-in dataset, recognised with one click.

Usage:
    streamlit run app/streamlit_app.py        # then "Gallery", and "Recognise" under a clip

The clips are the test split of the synthetic dataset's index (signers the
model never saw in training), one per sign, listed from
`<paths.synthetic>/index.csv`.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import streamlit as st

from app.recognition import recognise_video_file
from app.settings import AppSettings, load_settings
from app.state import SharedModel, current_model
from stages.lib.video import ClipRefused, Sampling, sample_clip

RESULTS_KEY = "gallery_results"       # st.session_state: {(model, clip path): Recognition}, kept across reruns
THUMBNAIL_PIXELS = 160
THUMBNAIL_SAMPLING_FPS = 2.0          # a thumbnail needs only the middle frame: decode few
COLUMNS = 3


def gallery_clips(index_csv: Path, count: int) -> pd.DataFrame:
    """Up to `count` test-split clips, one per sign (the first by path), in sign order."""
    try:
        index = pd.read_csv(index_csv)
    except (OSError, ValueError):
        return pd.DataFrame(columns=["path", "label", "signer", "split"])
    test_clips = index[index["split"] == "test"].sort_values(["label", "path"])
    return test_clips.groupby("label", sort=True).head(1).head(count).reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=64)
def thumbnail(clip_path: str, modified_ns: int):
    """The clip's middle frame, through the library's sampling (one frame over the whole clip)."""
    try:
        frames = sample_clip(clip_path, Sampling(fps=THUMBNAIL_SAMPLING_FPS, image_size=THUMBNAIL_PIXELS)).frames
        return frames[len(frames) // 2]
    except ClipRefused:
        return None


def recognise(shared: SharedModel, settings: AppSettings, clip_path: Path) -> None:
    st.session_state.setdefault(RESULTS_KEY, {})[result_key(shared, clip_path)] = recognise_video_file(
        shared, clip_path, top_k=settings.top_k, spotting=settings.spotting_for(shared.bundle))


def result_key(shared: SharedModel, clip_path: Path) -> tuple[str, str]:
    return str(shared.bundle.model_path), str(clip_path)


def result_markdown(recognition, true_label: str) -> str:
    """The verdict as HTML-enabled markdown. Labels come from folder names and index files, where `<` is
    allowed: every label and message is escaped, so none is rendered as HTML."""
    if recognition.prediction is None:
        return f":material/warning: {html.escape(recognition.problem)}"
    sign, probability = recognition.prediction.top[0]
    verdict = ":green[:material/check_circle: right]" if sign == true_label else ":red[:material/cancel: wrong]"
    others = ", ".join(f"{html.escape(name)} {p:.0%}" for name, p in recognition.prediction.top[1:])
    return (f"{verdict} **{html.escape(sign)}** ({probability:.0%})"
            + (f"  \n<small>then {others}</small>" if others else ""))


def show_clip(shared: SharedModel, settings: AppSettings, clip: pd.Series, clip_path: Path, number: int) -> None:
    frame = thumbnail(str(clip_path), clip_path.stat().st_mtime_ns) if clip_path.exists() else None
    if frame is not None:
        st.image(frame, width=THUMBNAIL_PIXELS)
    st.markdown(f"**{clip['label']}** · {clip['signer']}")
    if st.button("Recognise", key=f"recognise_{number}"):
        recognise(shared, settings, clip_path)
    recognition = st.session_state.get(RESULTS_KEY, {}).get(result_key(shared, clip_path))
    if recognition is not None:
        st.markdown(result_markdown(recognition, clip["label"]), unsafe_allow_html=True)


def render() -> None:
    settings = load_settings()
    st.title("Gallery")
    shared = current_model(settings)
    if shared is None:
        return
    clips_root = settings.path("synthetic")
    clips = gallery_clips(clips_root / "index.csv", settings.app_setting("gallery_clips"))
    if clips.empty:
        st.info(f"No built-in clips found (`{settings.relative(clips_root)}/index.csv`): "
                "`dvc repro` generates them.")
        return
    st.caption(f"Test-split clips from `{settings.relative(clips_root)}`: signers the model never saw in training.")
    if st.button("Recognise all", type="primary"):
        for _, clip in clips.iterrows():
            recognise(shared, settings, clips_root / clip["path"])
    columns = st.columns(COLUMNS)
    for number, clip in clips.iterrows():
        with columns[number % COLUMNS]:
            show_clip(shared, settings, clip, clips_root / clip["path"], number)
