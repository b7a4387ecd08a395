"""Page "Record": your own clips from the webcam, into the recordings folder the Train page trains on.

Usage:
    streamlit run app/streamlit_app.py        # then "Record": pick or type a sign, type your name,
                                              # START under the video, then Record

The webcam comes through streamlit-webrtc, as on the Live page. Record starts
a countdown drawn on the returned video, then `record.seconds` of the camera's
frames are kept as they come (`app.recorder.Recorder`, in the frame thread)
and written, atomically, to `<record.recordings>/<sign>/<signer>_<time>.mp4`
(`app.recordings`). The new clip plays back with Keep and Discard. Below, a
table counts clips per sign and per signer against `record.target_clips`,
with what to record next: too few clips, no idle clips (the no-sign class
`_none`, recorded through "No sign (idle)"), a single signer (then no
held-out-signer test is possible and training splits per clip).

Every name typed is checked before it can become a folder or a file name
(`app.recordings.check_sign_name`, `check_signer_name`); the reason for a
refusal shows under the fields and Record stays off. While a training run
reads the recordings, Record stays off too: a clip added mid-run would be
half seen by it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app.recorder import FAILED, SAVED, Recorder, RecorderStatus, RecordingRequest
from app.recordings import (
    NameRefused,
    RecordingError,
    RecordingsSummary,
    check_sign_name,
    check_signer_name,
    is_recording_of,
    preview_webm,
    recordings_summary,
)
from app.settings import AppSettings, load_settings, rtc_configuration
from app.training import RunGoing, going_run_name, recordings_unchanged_by_runs
from app.views.live import MEDIA_STREAM_CONSTRAINTS, guarded_frame_callback, read_rtc_secrets
from stages.lib.datasets import NO_SIGN_LABEL
from stages.lib.params import ParamsError

LOGGER = logging.getLogger(__name__)
RECORDER_KEY = "recorder"                 # st.session_state: this browser session's Recorder
KIND_KEY = "record_kind"                  # the radio: a sign, or no sign (idle)
SIGN_CHOICE_KEY = "record_sign_choice"    # the selectbox of signs
NEW_SIGN_KEY = "record_new_sign"          # the text field for a new sign
SIGNER_KEY = "record_signer"              # the text field for the signer's name
PENDING_CHOICE_KEY = "record_pending_sign"    # a new sign to select once its first clip exists
SHOWN_RESULT_KEY = "record_shown_result"  # the recording whose result this page has shown
PREVIEW_KEY = "record_preview"            # {clip path: webm bytes} of the clip played back
STATUS_CONTAINER_KEY = "record_status"    # CSS class st-key-record_status: the recorder's state as text
SIGN_CHOICE, IDLE_CHOICE = "A sign", "No sign (idle)"
# What the idle clips must hold. The live path's false signs fall on "into position" movements (the hands
# rise, wait at a sign's start pose, drop), so those are asked for by name, not only rest and fidgeting.
IDLE_INSTRUCTION = ("Make no sign: stand at rest, fidget, and **get into position without signing**: raise "
                    "your hands to where one of your signs starts, wait there a moment, and drop them. Vary "
                    "it from clip to clip (another sign's start, a scratch, a glance away).")
NEW_SIGN = "➕ New sign"
# How often the status line is redrawn while the camera plays: the countdown and progress are drawn on
# the video itself; a faster redraw costs the server's CPU, which the WebRTC stream needs more.
REFRESH_SECONDS = 0.5


def camera_keeps_its_place():
    """One element above the camera, whatever it holds: an element appearing before the camera would
    move it in the page's layout, and Streamlit would mount a new camera component and stop the stream."""
    return st.container()


def recorder_for(settings: AppSettings) -> Recorder:
    """This browser session's Recorder (new when the recordings folder changed)."""
    recorder = st.session_state.get(RECORDER_KEY)
    if recorder is None or recorder.recordings_dir != settings.recordings_dir:
        recorder = Recorder(settings.recordings_dir, runs_root=settings.root)
        st.session_state[RECORDER_KEY] = recorder
    return recorder


def make_video_frame_callback(recorder: Recorder):
    """The callback for this run of the script; it closes over this session's Recorder only."""
    return guarded_frame_callback(recorder.process_frame, "recording")


# --- what to record -------------------------------------------------------------------------------

def sign_options(summary: RecordingsSummary) -> list[str]:
    return [NEW_SIGN] + [sign for sign in summary.signs if sign != NO_SIGN_LABEL]


def prepare_sign_choice(options: list[str]) -> None:
    """Before the selectbox: select a new sign once it has clips, and never keep a choice that is gone."""
    pending = st.session_state.get(PENDING_CHOICE_KEY)
    if pending in options:
        st.session_state[SIGN_CHOICE_KEY] = pending
        st.session_state.pop(PENDING_CHOICE_KEY)
    if st.session_state.get(SIGN_CHOICE_KEY) not in options:
        st.session_state[SIGN_CHOICE_KEY] = NEW_SIGN


def chosen_names(summary: RecordingsSummary) -> tuple[str | None, str | None, list[str]]:
    """The fields: (sign, signer, why not) with names checked; None for a name refused or missing."""
    kind_column, sign_column, signer_column = st.columns([1.2, 2, 2])
    kind = kind_column.radio("Record", [SIGN_CHOICE, IDLE_CHOICE], key=KIND_KEY,
                             help=f"Idle clips (class `{NO_SIGN_LABEL}`) teach the model when no sign is made.")
    problems, sign, signer = [], None, None
    existing = [sign for sign in summary.signs if sign != NO_SIGN_LABEL]
    with sign_column:
        if kind == IDLE_CHOICE:
            sign = check_sign_name(NO_SIGN_LABEL, existing, idle=True)
            st.markdown(f"**Sign:** `{NO_SIGN_LABEL}`, no sign  \n{IDLE_INSTRUCTION}")
        else:
            options = sign_options(summary)
            prepare_sign_choice(options)
            choice = st.selectbox("Sign", options, key=SIGN_CHOICE_KEY)
            typed = st.text_input("New sign's name", key=NEW_SIGN_KEY, placeholder="e.g. thanks") \
                if choice == NEW_SIGN else choice
            try:
                sign = check_sign_name(typed, existing)
            except NameRefused as refusal:
                problems.append(str(refusal))
    try:
        signer = check_signer_name(signer_column.text_input("Your name (the signer)", key=SIGNER_KEY,
                                                            placeholder="e.g. ana"))
    except NameRefused as refusal:
        problems.append(str(refusal))
    return sign, signer, problems


# --- the clip just recorded -------------------------------------------------------------------------

def show_result(recorder: Recorder, status: RecorderStatus, settings: AppSettings) -> None:
    """The new clip with Keep and Discard, or why nothing was saved."""
    if status.phase == FAILED:
        st.error(status.message, icon=":material/videocam_off:")
        return
    if status.phase != SAVED or status.clip_path is None:
        return
    clip = Path(status.clip_path)
    previews = st.session_state.setdefault(PREVIEW_KEY, {})
    if str(clip) not in previews:
        previews.clear()
        previews[str(clip)] = preview_webm(clip)
    if previews[str(clip)]:
        st.video(previews[str(clip)], format="video/webm", loop=True, autoplay=True, muted=True)
    st.caption(f"New clip: `{settings.relative(clip)}`")
    keep_column, discard_column = st.columns(2)
    # Callbacks run before the page's next run, so that run already shows the camera ready again.
    keep_column.button("Keep", type="primary", icon=":material/check:", use_container_width=True,
                       on_click=keep_clip, args=(recorder, clip))
    discard_column.button("Discard", icon=":material/delete:", use_container_width=True,
                          on_click=discard_clip, args=(recorder, clip, settings))


def keep_clip(recorder: Recorder, clip: Path) -> None:
    recorder.clear()
    st.toast(f"Kept {clip.name}")


def discard_clip(recorder: Recorder, clip: Path, settings: AppSettings) -> None:
    try:
        with recordings_unchanged_by_runs(settings.root):     # never while a run reads the folder
            if is_recording_of(clip, settings.recordings_dir):   # only a clip of the folder, never another file
                clip.unlink()
    except RunGoing:
        st.toast(f"A training run is going: {clip.name} stays until it has finished. Discard it then.")
        return
    recorder.clear()
    st.toast(f"Discarded {clip.name}")


def status_markdown(status: RecorderStatus, playing: bool) -> str:
    if status.phase == "countdown":
        return f"**Get ready:** recording in {status.countdown_left:.0f} s"
    if status.phase == "recording":
        return f"**Recording** {status.seconds_recorded:.1f} of {status.request.seconds:g} s"
    if status.phase == "saving":
        return f"**Saving** {status.frames} frames…"
    if status.phase == SAVED:
        return "**Saved.** Keep it, or discard it and record again."
    if not playing:
        return "Press **START** under the video and allow the camera, then **Record**."
    return "Camera on: press **Record**."


# --- the table --------------------------------------------------------------------------------------

def show_table(summary: RecordingsSummary, settings: AppSettings) -> None:
    st.subheader("Clips so far")
    folder = settings.relative(settings.recordings_dir)
    if summary.table.empty:
        st.info(f"No clips yet in `{folder}/`. Record at least two signs and idle clips (`{NO_SIGN_LABEL}`), "
                f"{settings.record_setting('target_clips')} of each, ideally by two or more people.")
    else:
        st.dataframe(summary.table, hide_index=True)
        st.caption(f"In `{folder}/` (params.yaml `record.recordings`). Training split: {summary.split.reason}.")
    for warning in summary.warnings:
        st.warning(warning, icon=":material/info:")


def render() -> None:
    settings = load_settings()
    st.title("Record your signs")
    try:
        summary = recordings_summary(settings.recordings_dir, settings.record_params,
                                     settings.record_setting("train_overrides"))
    except (OSError, ParamsError) as error:
        st.error(f"Cannot read the recordings folder `{settings.relative(settings.recordings_dir)}`: {error}")
        return
    sign, signer, problems = chosen_names(summary)
    with camera_keeps_its_place():
        for problem in problems:
            st.error(problem, icon=":material/block:")
    recorder = recorder_for(settings)

    video_column, control_column = st.columns([3, 2])
    with video_column:
        context = camera(recorder)
    playing = bool(context is not None and context.state.playing)
    going = going_run_name(settings.root)
    with control_column:
        record_clicked = st.button(
            "Record", type="primary", icon=":material/radio_button_checked:", use_container_width=True,
            disabled=bool(problems or sign is None or signer is None or not playing or going
                          or recorder.status().busy),
            help=f"{settings.record_setting('countdown_seconds'):g} s countdown, then "
                 f"{settings.record_setting('seconds'):g} s of video.")
        if going:
            st.info(f"A training run ({going}) is reading the recordings: recording resumes when it ends "
                    "(see the Train page).", icon=":material/hourglass_top:")
        if record_clicked:
            start_recording(recorder, sign, signer, settings)
        follow_recorder(recorder, playing)
        show_result(recorder, recorder.status(), settings)
    show_table(summary, settings)


def follow_recorder(recorder: Recorder, playing: bool) -> None:
    """The recorder's state, redrawn while the camera plays (a fragment: the rest of the page stays, and
    the page's own run ends, so nothing an earlier run drew lingers); the page reruns when a recording
    has its result (the clip to play back, or why not)."""

    @st.fragment(run_every=REFRESH_SECONDS if playing else None)
    def status_line() -> None:
        status = recorder.status()
        with st.container(key=STATUS_CONTAINER_KEY):
            st.markdown(status_markdown(status, playing))
        if status.phase in (SAVED, FAILED) and st.session_state.get(SHOWN_RESULT_KEY) != status.generation:
            st.session_state[SHOWN_RESULT_KEY] = status.generation
            st.rerun(scope="app")

    status_line()


def start_recording(recorder: Recorder, sign: str, signer: str, settings: AppSettings) -> None:
    request = RecordingRequest(sign, signer, float(settings.record_setting("seconds")),
                               float(settings.record_setting("countdown_seconds")))
    try:
        recorder.start(request)
    except RecordingError as error:
        st.error(str(error))
        return
    if sign != NO_SIGN_LABEL:
        st.session_state[PENDING_CHOICE_KEY] = sign


def camera(recorder: Recorder):
    """The webcam through streamlit-webrtc, as on the Live page; None (with the reason) when it cannot start."""
    try:
        configuration, _ = rtc_configuration(read_rtc_secrets)
    except ValueError as error:
        st.error(f"WebRTC configuration ignored: {error}. Using no ICE servers (localhost and LAN only).")
        configuration = {"iceServers": []}
    try:
        return webrtc_streamer(
            key="record",
            mode=WebRtcMode.SENDRECV,
            rtc_configuration=configuration,
            media_stream_constraints=MEDIA_STREAM_CONSTRAINTS,
            video_frame_callback=make_video_frame_callback(recorder),
            async_processing=True,   # the callback only copies frames; slow redraws drop, never queue
        )
    except Exception as error:  # no server-side WebRTC here (e.g. a test harness): the rest of the page works
        st.error(f"The camera cannot start here ({type(error).__name__}: {error}).")
        return None
