"""Page "Live": webcam signs recognised as they happen, and the sentence they make, through streamlit-webrtc.

Usage:
    streamlit run app/streamlit_app.py        # then "Live", and START under the video

The browser sends the camera over WebRTC; each frame arrives in
`video_frame_callback` in streamlit-webrtc's frame thread, goes through this
session's `LiveSession` (the library's live path and sign spotter), and comes
back with the current state and a confidence bar drawn on it. Beside the
video, a loop in the script thread shows the sentence (the signs made,
newest last, with a Clear button), the current state (no sign, or the sign
being recognised and its confidence), the top-3, and frames/s. Slow frames
are dropped by streamlit-webrtc (async processing keeps only the newest
waiting frame); this page adds no queue of its own.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import av
import numpy as np
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app.live_session import LiveSession, LiveSnapshot, draw_overlay
from app.settings import RTC_SECRETS_KEY, AppSettings, load_settings, rtc_configuration
from app.state import SharedModel, current_model

LOGGER = logging.getLogger(__name__)
LIVE_SESSION_KEY = "live_session"      # st.session_state: this browser session's LiveSession
TOP3_CONTAINER_KEY = "live_top3"       # the state and top-3 text's container; CSS class st-key-live_top3
SENTENCE_CONTAINER_KEY = "live_sentence"   # the sentence's container; CSS class st-key-live_sentence
MAX_SMOOTHING_STEPS = 10               # the slider's upper end: 1 s of model steps at 10 steps/s
REFRESH_SECONDS = 0.1                  # how often the text beside the video is redrawn while playing
# Ask the camera for a modest size: every frame is letterboxed and shrunk to the model's input anyway.
MEDIA_STREAM_CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False}


def read_rtc_secrets():
    """The [rtc_configuration] table of .streamlit/secrets.toml, or None without one."""
    try:
        return st.secrets[RTC_SECRETS_KEY] if RTC_SECRETS_KEY in st.secrets else None
    except Exception:  # no secrets file at all: Streamlit raises rather than returning empty
        return None


def frame_timestamp(frame: av.VideoFrame) -> float:
    """Seconds on the stream's clock (pts * time_base); the local clock when the frame has none."""
    return float(frame.time) if frame.time is not None else time.monotonic()


def guarded_frame_callback(process: Callable[[np.ndarray, float], np.ndarray], what: str):
    """A streamlit-webrtc frame callback around `process` (BGR frame, stream time -> BGR frame to show).

    THREAD BOUNDARY: the callback runs in streamlit-webrtc's frame thread, not
    the script thread, so `process` may use only objects locked inside (a
    LiveSession, a Recorder), never st.* calls or st.session_state. When it
    fails, the camera's own frame is shown and the server log says once what
    went wrong: the video keeps flowing.
    """
    failures_logged = []

    def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
        frame_bgr = frame.to_ndarray(format="bgr24")                  # (H, W, 3) uint8 BGR
        try:
            shown = process(frame_bgr, frame_timestamp(frame))
        except Exception:
            if not failures_logged:
                LOGGER.exception("%s failed; the video continues without it", what)
                failures_logged.append(True)
            return frame
        return av.VideoFrame.from_ndarray(shown, format="bgr24")
    return video_frame_callback


def make_video_frame_callback(live_session: LiveSession):
    """The callback for this run of the script; it closes over this session's LiveSession only."""
    return guarded_frame_callback(
        lambda frame_bgr, seconds: draw_overlay(frame_bgr, live_session.process_frame(frame_bgr, seconds)),
        "live recognition")


def session_for_model(shared: SharedModel, settings: AppSettings) -> LiveSession:
    """This browser session's LiveSession, new when the model changed (one recognizer per session)."""
    live_session = st.session_state.get(LIVE_SESSION_KEY)
    if live_session is None or live_session.shared_model is not shared:
        live_session = LiveSession(shared, settings.spotting_for(shared.bundle),
                                   top_k=settings.top_k, sentence_length=settings.app_setting("sentence_length"))
        st.session_state[LIVE_SESSION_KEY] = live_session
    return live_session


def model_caption(bundle, configuration_source: str) -> str:
    """Under the video: what the model knows and sees (from its card), and where WebRTC's settings came from."""
    no_sign = (f"no-sign class `{bundle.no_sign_label}`" if bundle.no_sign_label
               else "no no-sign class: a sign is always named")
    return (f"{len(bundle.labels)} classes ({no_sign}) · windows of {bundle.seq_len} frames at "
            f"{bundle.sample_fps:g} frames/s (≈{bundle.window_seconds:.1f} s of signing per prediction) · "
            f"WebRTC: {configuration_source}")


def top3_markdown(snapshot: LiveSnapshot) -> str:
    """The current state and top-3 as text: what screen readers read and the browser test checks."""
    if not snapshot.top:
        return f"**Now:** waiting\n\nFilling the buffer: {snapshot.buffer_fill:.0%} of the frames the model needs."
    now = (f"**Now:** {snapshot.current_sign} ({snapshot.confidence:.0%})" if snapshot.current_sign
           else f"**Now:** {snapshot.state}")
    lines = [now, ""]
    if snapshot.held_back:
        sign, probability = snapshot.held_back
        lines += [f"_{sign} has been first for a while at {probability:.0%}, under the threshold "
                  f"({snapshot.threshold:.0%}): if you are signing it, lower the Confidence threshold._", ""]
    lines += ["**Top 3**", ""]
    # An escaped "1." stays text: as a markdown list, the rank would be a list marker outside the text.
    lines += [f"{rank}\\. {sign} — {probability:.0%}  " for rank, (sign, probability) in enumerate(snapshot.top, 1)]
    return "\n".join(lines)


def sentence_markdown(snapshot: LiveSnapshot) -> str:
    """The signs made so far, oldest first, on one line: the sentence."""
    if not snapshot.sentence:
        return "_No sign made yet._"
    return "**Sentence:** " + " · ".join(sign.sign for sign in snapshot.sentence)


def status_markdown(snapshot: LiveSnapshot, playing: bool) -> str:
    if not playing:
        return "Press **START** under the video and allow the camera."
    return f"Processing **{snapshot.frames_per_second:.1f} frames/s** · {snapshot.model_steps} model steps"


def show_snapshot(placeholders: dict, snapshot: LiveSnapshot, playing: bool) -> None:
    placeholders["sentence"].markdown(sentence_markdown(snapshot))
    placeholders["top3"].markdown(top3_markdown(snapshot))
    placeholders["status"].markdown(status_markdown(snapshot, playing))


def render() -> None:
    settings = load_settings()
    st.title("Live")
    shared = current_model(settings)
    if shared is None:
        return
    try:
        configuration, configuration_source = rtc_configuration(read_rtc_secrets)
    except ValueError as error:
        st.error(f"WebRTC configuration ignored: {error}. Using no ICE servers (localhost and LAN only).")
        configuration, configuration_source = {"iceServers": []}, "default after an error"
    live_session = session_for_model(shared, settings)

    spotting = settings.spotting_for(shared.bundle)       # the model's own (calibrated), else params.yaml's
    smoothing_column, threshold_column, clear_column, reset_column = st.columns([2, 2, 1, 1],
                                                                                vertical_alignment="bottom")
    smoothing_steps = smoothing_column.slider(
        "Smoothing (model steps averaged)", 1, MAX_SMOOTHING_STEPS, spotting.smoothing_steps,
        help="Average the probabilities over this many recent model steps: steadier, but slower to change.")
    # The key holds the model and its files' version, so another model's slider, or this one's after a
    # re-calibration (a `spotting.*` experiment), starts at that model's own threshold.
    threshold = threshold_column.slider(
        "Confidence threshold", 0.0, 1.0, spotting.threshold, 0.05,
        key=f"threshold:{shared.bundle.model_path}:{hash(shared.version)}",
        help="A sign must reach this smoothed probability, and hold it, before it joins the sentence. "
             f"It starts at {spotting.threshold:g}{settings.spotting_origin(shared.bundle)}.")
    live_session.update_settings(smoothing_steps, threshold)
    if clear_column.button("Clear", help="Empty the sentence."):
        live_session.clear_sentence()
    if reset_column.button("Reset", help="Empty the frame buffer and the sentence."):
        live_session.request_reset()

    video_column, text_column = st.columns([3, 2])
    with video_column:
        context = webrtc_streamer(
            key="live",
            mode=WebRtcMode.SENDRECV,
            rtc_configuration=configuration,
            media_stream_constraints=MEDIA_STREAM_CONSTRAINTS,
            video_frame_callback=make_video_frame_callback(live_session),
            async_processing=True,   # frames arriving while one is processed are dropped, not queued
        )
        st.caption(model_caption(shared.bundle, configuration_source))
    with text_column:
        with st.container(key=SENTENCE_CONTAINER_KEY):
            sentence = st.empty()
        with st.container(key=TOP3_CONTAINER_KEY):
            top3 = st.empty()
        status = st.empty()
    placeholders = {"sentence": sentence, "top3": top3, "status": status}

    show_snapshot(placeholders, live_session.snapshot(), context.state.playing)
    # The usual streamlit-webrtc pattern: while the stream plays, this script run keeps
    # redrawing the text from the frame thread's latest snapshot (read under its lock).
    # A widget change ends this loop by rerunning the script.
    while context.state.playing:
        show_snapshot(placeholders, live_session.snapshot(), True)
        time.sleep(REFRESH_SECONDS)
