"""Page "Upload": one video file -> preview, its top-3, the signs made in it, and the frames the model saw.

Usage:
    streamlit run app/streamlit_app.py        # then "Upload" and drop a .mp4/.avi/.mov/.webm

The clip is sampled exactly as training clips were (the model card's rule:
rate, minimum frames, longest clip), its centred window classified with the
engine chosen (TFLite parts, or the Keras full graph), and its frames passed
through the live path's TFLite engines and sign spotter for the signs a
longer video holds. A clip the library refuses (corrupt, too short, too long,
not a video) gets its reason as a message, never a traceback.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.recognition import ENGINES, Recognition, accepted_extensions, recognise_video_bytes, upload_problem
from app.settings import load_settings
from app.state import SharedModel, current_model, model_for_uploads

FRAME_THUMBNAIL_PIXELS = 96


def show_top_predictions(recognition: Recognition) -> None:
    """The top-k as a bar chart and as text (readable by screen readers and tests)."""
    prediction = recognition.prediction
    best_sign, best_probability = prediction.top[0]
    st.metric("Recognised sign", best_sign, f"{best_probability:.0%} probability", delta_color="off", delta_arrow="off")
    table = pd.DataFrame(prediction.top, columns=["sign", "probability"])
    st.bar_chart(table, x="sign", y="probability", horizontal=True, sort=False, height=180)
    st.markdown("\n".join(f"{rank}. {sign} — {probability:.1%}"
                          for rank, (sign, probability) in enumerate(prediction.top, 1)))


def show_signs(recognition: Recognition) -> None:
    """The signs the live path spots in the clip, in order, with their times (the no-sign state is never listed)."""
    st.markdown("**Signs made in this video**")
    if not recognition.signs:
        st.markdown("_None held long enough above the threshold._")
        return
    st.markdown("\n".join(f"{index}. {sign.sign} — {sign.start:.1f}–{sign.end:.1f} s ({sign.confidence:.0%})"
                          for index, sign in enumerate(recognition.signs, 1)))


def show_sampled_frames(recognition: Recognition, sample_fps: float) -> None:
    frames = recognition.frames                                   # (sampled frames, H, W, 3) uint8 RGB
    st.markdown(f"**The {len(frames)} frames the model saw** ({sample_fps:g} per second of the clip, "
                "letterboxed and resized as in training)")
    st.image(list(frames), width=FRAME_THUMBNAIL_PIXELS, caption=[f"{i / sample_fps:.1f}s" for i in range(len(frames))])


@st.cache_data(max_entries=16, show_spinner=False,
               hash_funcs={SharedModel: lambda shared: (str(shared.bundle.model_path), shared.version)})
def recognise_upload(shared: SharedModel, file_name: str, data: bytes, top_k: int, spotting, fast: bool
                     ) -> Recognition:
    """An upload recognised once per file content (Streamlit hashes `data`), model version, engine and
    settings: a rerun (the Engine radio, a slider elsewhere) shows the result again without redoing it."""
    return recognise_video_bytes(shared, file_name, data, top_k=top_k, spotting=spotting, fast=fast)


def render() -> None:
    settings = load_settings()
    st.title("Upload a clip")
    shared = current_model(settings)
    if shared is None:
        return
    uploaded = st.file_uploader(
        f"A video of one sign ({', '.join(accepted_extensions())}; at most {settings.max_upload_mb} MB)",
        type=accepted_extensions(), max_upload_size=settings.max_upload_mb)
    engine = st.radio("Engine", list(ENGINES), horizontal=True,
                      help="Both run the same served graph; TFLite is several times faster on a CPU.")
    bundle = shared.bundle
    if uploaded is None:
        limit = f"; at most {bundle.sampling.max_seconds:g} s" if bundle.sampling.max_seconds else ""
        st.caption(f"A clip of one sign, or several with pauses{limit}. It is sampled at {bundle.sample_fps:g} "
                   f"frames per second, as in training; the top 3 are of its middle {bundle.window_seconds:.1f} s.")
        return
    problem = upload_problem(uploaded.name, uploaded.size, settings.max_upload_mb)
    if problem:
        st.error(problem)
        return
    data = uploaded.getvalue()
    with st.spinner("Recognising…"):
        recognition = recognise_upload(model_for_uploads(shared), uploaded.name, data, settings.top_k,
                                       settings.spotting_for(shared.bundle), ENGINES[engine])
    if recognition.prediction is None:
        st.error(recognition.problem)
        return
    preview_column, result_column = st.columns([1, 1])
    with preview_column:
        st.video(data, format=uploaded.type or "video/mp4")
        st.caption("Preview (some codecs, e.g. MPEG-4 part 2 from OpenCV, do not play in browsers; "
                   "the frames below are what counts).")
    with result_column:
        show_top_predictions(recognition)
        show_signs(recognition)
    show_sampled_frames(recognition, bundle.sample_fps)
