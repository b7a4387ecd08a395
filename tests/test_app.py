"""The Streamlit app's pages and logic, through streamlit.testing.v1.AppTest (no browser, no camera).

Usage:
    python -m pytest -q tests/test_app.py

Nothing here reads the repository's models/ or reports/: a small served model,
trained in a few seconds on synthetic signers, and a few report files are built
in a temporary folder that `SIGNLANG_ROOT` points the app at. The browser test
(tests/test_app_browser.py) reuses the same folder.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, make_workspace, write_recordings, write_video

ENTRY = str(REPO_ROOT / "app" / "streamlit_app.py")
TIMEOUT = 120            # seconds per AppTest run: the first one imports TensorFlow

# The test model: four signs whose motions differ clearly and the idle class, seen as windows
# of 8 frames at 64 px, 5 frames per second (so clips stay cheap to embed).
APP_SIGNS = ("clap", "spread_hands", "tap_head", "wave")
CAMERA_SIGN = "wave"            # the sign of the clip the tests upload and the fake camera plays
CAMERA_SIGNER, CAMERA_REPETITION = 1, 2   # a training signer, a repetition the model never saw
SEQ_LEN, IMAGE_SIZE, SAMPLE_FPS = 8, 64, 5.0
CLIP_FPS, CLIP_WIDTH, CLIP_HEIGHT, CLIP_SECONDS = 25, 128, 96, 1.2
TRAIN_SIGNERS, TRAIN_REPETITIONS = 4, 2
MIN_FRAMES = 4                  # sample.min_frames in the test root's params.yaml
SEED = 42


@dataclass(frozen=True)
class AppRoot:
    root: Path                  # what SIGNLANG_ROOT points at
    labels: list[str]
    camera_clip: Path           # an .avi of CAMERA_SIGN (MJPG: colours nearly exact)
    camera_frames: np.ndarray   # the same clip, (frames, H, W, 3) uint8 BGR
    model: Path                 # root/models/model.keras
    second_model: Path          # a copy of the same bundle elsewhere under models/


def render(sign_name: str, signer_index: int, repetition: int) -> np.ndarray:
    """(frames, CLIP_HEIGHT, CLIP_WIDTH, 3) uint8 BGR of one synthetic clip (or idle clip for `_none`)."""
    from stages.lib.synthetic import SIGNS, make_signer, render_clip, render_idle_clip
    signer = make_signer(signer_index, SEED, CLIP_WIDTH, CLIP_HEIGHT)
    if sign_name == "_none":
        return render_idle_clip(signer, repetition, SEED, CLIP_FPS, 2.0)
    sign = next(sign for sign in SIGNS if sign.name == sign_name)
    return render_clip(sign, signer, repetition, SEED, CLIP_FPS, CLIP_SECONDS)


def train_served_model(models_dir: Path, clips_dir: Path) -> list[str]:
    """Train a head on synthetic clips with the library's own pieces and write the bundle the app loads.

    The clips are written as videos, sampled with the pipeline's rule, embedded
    by the TFLite encoder, and the head trained on windows drawn anew each
    epoch (the train stage's TrainingWindows); the bundle is written by the
    assemble stage's `write_bundle`. About half a minute on two cores.
    """
    import keras

    from stages.assemble import write_bundle
    from stages.lib.backbone import build_frame_encoder
    from stages.lib.embeddings import SplitClips
    from stages.lib.engines import TFLiteFrameEngine, convert_to_tflite
    from stages.lib.models import build_full_model, build_head
    from stages.lib.served import make_card
    from stages.lib.video import Sampling, sample_clip
    from stages.lib.windows import WindowJitter
    from stages.train import TrainingWindows

    keras.utils.set_random_seed(SEED)
    labels = sorted(APP_SIGNS + ("_none",))
    sampling = Sampling(fps=SAMPLE_FPS, image_size=IMAGE_SIZE, min_frames=MIN_FRAMES, max_seconds=60)
    # Pretrained weights: random ones give near-constant features (see design.md).
    encoder, weights_source = build_frame_encoder(IMAGE_SIZE, "imagenet")
    encoder_tflite = convert_to_tflite(encoder, (1, IMAGE_SIZE, IMAGE_SIZE, 3))
    engine = TFLiteFrameEngine(encoder_tflite)
    clips, targets = [], []
    for sign in labels:
        for signer in range(TRAIN_SIGNERS):
            for repetition in range(TRAIN_REPETITIONS):
                path = write_video(clips_dir / sign / f"{signer}_{repetition}.avi", render(sign, signer, repetition),
                                   fps=CLIP_FPS)
                clips.append(engine.embed(sample_clip(path, sampling).frames))      # (frames, 1280)
                targets.append(labels.index(sign))
    split = SplitClips(clips, np.array(targets), np.array([""] * len(clips)))
    train_params = {"lstm_units": 16, "dropout": 0.1, "learning_rate": 0.003, "batch_size": 16, "epochs": 25,
                    "windows_per_clip": 4, "position_jitter": 0.2, "speed_jitter": 0.15}
    windows = TrainingWindows(split, SEQ_LEN, train_params["batch_size"], train_params["windows_per_clip"],
                              WindowJitter(0.2, 0.15), SEED, labels.index("_none"))
    head = build_head(SEQ_LEN, len(labels), train_params["lstm_units"], train_params["dropout"])
    head.compile(optimizer=keras.optimizers.Adam(train_params["learning_rate"]), loss="sparse_categorical_crossentropy")
    head.fit(windows, epochs=train_params["epochs"], verbose=0)
    head_card = {"labels": labels, "no_sign_label": "_none", "seq_len": SEQ_LEN, "sample_fps": SAMPLE_FPS,
                 "window_seconds": SEQ_LEN / SAMPLE_FPS, "sampling": sampling.as_dict(), "image_size": IMAGE_SIZE,
                 "train_params": train_params, "train_clip_durations": {}}
    card = make_card(head_card, weights_source, {"enabled": False})
    files = {name: models_dir / f"model{suffix}" for name, suffix in (
        ("model", ".keras"), ("model_card", ".json"), ("frame_encoder_tflite", ".frame_encoder.tflite"),
        ("head_tflite", ".head.tflite"))}
    write_bundle(build_full_model(encoder, head, SEQ_LEN), encoder_tflite, head, card, files)
    return labels


def copy_bundle(models_dir: Path, target_dir: Path) -> Path:
    """A second served model: the same files under another folder."""
    target_dir.mkdir(parents=True)
    for name in ("model.keras", "model.json", "model.frame_encoder.tflite", "model.head.tflite"):
        shutil.copy(models_dir / name, target_dir / name)
    return target_dir / "model.keras"


def write_reports(root: Path, labels: list[str]) -> None:
    """What the evaluate and train stages write, with made-up figures."""
    reports = root / "reports"
    (reports / "train/plots/metrics/train").mkdir(parents=True)
    (reports / "train/plots/metrics/eval").mkdir(parents=True)
    metrics = {"val_accuracy": 0.9, "val_stream_sign_error_rate": 0.05, "test_accuracy": 0.875,
               "test_top3_accuracy": 1.0, "test_macro_f1": 0.86, "num_test_clips": 8, "stream_sign_error_rate": 0.08,
               "fast_stream_sign_error_rate": 0.125, "num_classes": len(labels), "backbone_weights": "imagenet (test)", "finetune_enabled": False}
    (reports / "metrics.json").write_text(json.dumps(metrics))
    per_class = "class,precision,recall,f1,support\n" + "".join(f"{label},1.0,0.75,0.86,2\n" for label in labels)
    (reports / "per_class.csv").write_text(per_class)
    cv2.imwrite(str(reports / "confusion_matrix.png"), np.full((40, 40, 3), 200, np.uint8))
    for subset, losses in (("train", (1.2, 0.6, 0.3)), ("eval", (1.3, 0.8, 0.5))):
        rows = "".join(f"{step}\t{loss}\n" for step, loss in enumerate(losses))
        (reports / f"train/plots/metrics/{subset}/loss.tsv").write_text("step\tloss\n" + rows)


def write_gallery(root: Path) -> None:
    """Two test-split clips and the index that lists them, like the generate stage's."""
    clips_dir = root / "data" / "synthetic"
    rows = ["path,label,signer,split"]
    for sign in ("clap", CAMERA_SIGN):
        relative = f"{sign}/signer0{CAMERA_SIGNER}_r{CAMERA_REPETITION}.avi"
        write_video(clips_dir / relative, render(sign, CAMERA_SIGNER, CAMERA_REPETITION), fps=CLIP_FPS)
        rows.append(f"{relative},{sign},signer0{CAMERA_SIGNER},test")
    rows.append("clap/signer00_r0.avi,clap,signer00,train")         # not shown: not in the test split
    (clips_dir / "index.csv").write_text("\n".join(rows) + "\n")


def write_params(root: Path) -> None:
    """The repository's params with a smaller sample.min_frames, so the too-short test does not depend on it."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["sample"]["min_frames"] = MIN_FRAMES
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def build_app_root(root: Path) -> AppRoot:
    root.mkdir(parents=True, exist_ok=True)
    labels = train_served_model(root / "models", root.parent / "app_training_clips")
    second_model = copy_bundle(root / "models", root / "models" / "second")
    write_reports(root, labels)
    write_gallery(root)
    write_params(root)
    camera_frames = render(CAMERA_SIGN, CAMERA_SIGNER, CAMERA_REPETITION)
    camera_clip = write_video(root / "camera" / f"{CAMERA_SIGN}.avi", camera_frames, fps=CLIP_FPS)
    return AppRoot(root, labels, camera_clip, camera_frames, root / "models" / "model.keras", second_model)


def shared_app_root(tmp_path_factory) -> AppRoot:
    """Built once per test session (this file and the browser test share it)."""
    root = tmp_path_factory.getbasetemp() / "app_root"
    done = root / "built.json"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        built = build_app_root(root)
        done.write_text(json.dumps({"labels": built.labels}))
    labels = json.loads(done.read_text())["labels"]
    return AppRoot(root, labels, root / "camera" / f"{CAMERA_SIGN}.avi",
                   render(CAMERA_SIGN, CAMERA_SIGNER, CAMERA_REPETITION),
                   root / "models" / "model.keras", root / "models" / "second" / "model.keras")


@pytest.fixture(scope="module")
def app_root(tmp_path_factory) -> AppRoot:
    return shared_app_root(tmp_path_factory)


@pytest.fixture
def served(app_root, monkeypatch) -> AppRoot:
    """The app pointed at the test root."""
    monkeypatch.setenv("SIGNLANG_ROOT", str(app_root.root))
    monkeypatch.delenv("SIGNLANG_RTC_CONFIGURATION", raising=False)
    return app_root


def page(name: str) -> AppTest:
    """An AppTest of one page's render(), as the navigation runs it."""
    return AppTest.from_string(f"from app.views import {name}\n{name}.render()\n", default_timeout=TIMEOUT)


def run_page(name: str) -> AppTest:
    app = page(name).run()
    assert not app.exception, [error.message for error in app.exception]
    return app


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


# --- the no-model state ---------------------------------------------------------------------------

def test_without_a_model_every_page_says_to_run_dvc_repro(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNLANG_ROOT", str(tmp_path))          # empty: a fresh clone before `dvc repro`
    app = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()   # the Live page, the default
    assert not app.exception, [error.message for error in app.exception]
    assert "dvc repro" in texts(app.info)
    for name in ("upload", "gallery", "model", "results"):
        assert "dvc repro" in texts(run_page(name).info), name


# --- Model ------------------------------------------------------------------------------------------

def test_model_page_offers_the_served_models_and_remembers_the_choice(served):
    app = run_page("model")
    choice = app.selectbox[0]
    assert choice.options == ["models/model.keras", "models/second/model.keras"]
    assert choice.value == "models/model.keras"                  # the pipeline's model by default
    assert "can execute code" in texts(app.warning)               # why model files cannot be uploaded
    assert all(f"`{label}`" in texts(app.markdown) for label in served.labels)
    assert "0.875" in texts(app.dataframe)                      # its test metrics from reports/metrics.json

    assert "Spotting threshold 0.9: params.yaml's (no calibration beside this model)" in texts(app.caption)

    choice.select("models/second/model.keras").run()
    assert not app.exception
    assert app.session_state["selected_model"] == str(served.second_model)
    assert app.selectbox[0].value == "models/second/model.keras"


def test_a_models_calibrated_threshold_is_the_one_the_app_starts_with(served):
    """The calibrate stage's record beside a model (here made by its own function from hand-made steps of
    an unsure model: every sign ranked first at 0.72) sets the threshold the pages start at."""
    from app.settings import load_settings
    from stages.calibrate import ClipSteps, calibrate
    from stages.lib.served import load_bundle, spotting_path_for
    from stages.lib.storage import write_json
    bundle = load_bundle(served.second_model)
    signs = [label for label in bundle.labels if label != bundle.no_sign_label]
    steps = 24
    clips = []
    for sign in signs:
        probabilities = np.full((steps, len(bundle.labels)), 0.28 / (len(bundle.labels) - 1))
        probabilities[:, bundle.labels.index(sign)] = 0.72
        clips.append(ClipSteps(sign, np.arange(steps) / bundle.sample_fps, probabilities, np.ones(steps)))
    params = load_settings().params
    record, _ = calibrate(bundle, clips, params["spotting"])
    write_json(spotting_path_for(served.second_model), record)
    try:
        assert load_settings().spotting_for(load_bundle(served.second_model)).threshold == 0.7
        app = run_page("model")
        app.selectbox[0].select("models/second/model.keras").run()
        assert f"Spotting threshold 0.7, calibrated on its {len(signs)} sign and 0 idle validation clips" in \
            texts(app.caption)
    finally:
        spotting_path_for(served.second_model).unlink()


# --- Upload -----------------------------------------------------------------------------------------

def upload(file_name: str, data: bytes, mime_type: str = "video/x-msvideo") -> AppTest:
    app = run_page("upload")
    app.file_uploader[0].set_value((file_name, data, mime_type)).run()
    assert not app.exception, [error.message for error in app.exception]
    return app


def test_upload_of_a_good_clip_shows_its_top3_the_signs_and_the_frames_the_model_saw(served):
    from stages.lib.served import load_bundle, predict_video
    expected, frames = predict_video(load_bundle(served.model), served.camera_clip, fast=True)

    app = upload("my clip.avi", served.camera_clip.read_bytes())
    assert not app.error
    assert app.metric[0].value == expected.label
    assert len(app.get("vega_lite_chart")) == 1             # the top-3 bar chart
    top3_text = texts(app.markdown)
    assert all(f"{rank}. {sign} — " in top3_text for rank, (sign, _) in enumerate(expected.top, 1))
    assert "Signs made in this video" in top3_text
    strip = app.get("image")[0].proto                             # the sampled frames, one image each
    from stages.lib.video import fixed_rate_indices
    assert len(strip.imgs) == len(frames) == len(fixed_rate_indices(len(served.camera_frames), CLIP_FPS, SAMPLE_FPS))


def test_an_upload_never_waits_for_the_live_paths_lock(served):
    """The webcam's model lock held (as a live frame is being recognised): an upload still finishes, on the
    model's upload copy, and its result is cached by content, so the page's reruns do not redo it."""
    from app.state import load_shared_model, model_for_uploads
    from stages.lib.served import bundle_version
    live = load_shared_model(str(served.model), bundle_version(served.model))
    assert model_for_uploads(live) is not live and model_for_uploads(live).lock is not live.lock
    with live.lock:                      # held for the whole upload: it would deadlock if the upload took it
        app = upload("my clip.avi", served.camera_clip.read_bytes())
    assert not app.error and app.metric


def test_upload_of_a_corrupt_clip_explains_instead_of_crashing(served):
    app = upload("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, "video/mp4")
    assert "cannot be used" in texts(app.error)
    assert not app.metric


def test_upload_of_a_too_short_clip_names_the_minimum_from_the_models_card(served):
    frames = render(CAMERA_SIGN, 0, 0)[:10]                       # 10 frames at 25 fps: 2 at 5 frames/s
    clip = write_video(served.root.parent / "short.avi", frames, fps=CLIP_FPS)
    app = upload("short.avi", clip.read_bytes())
    assert f"too short: 2 frames at {SAMPLE_FPS:g} frames/s, need at least {MIN_FRAMES}" in texts(app.error)


def test_upload_of_a_clip_beyond_the_duration_limit_is_refused_with_the_reason(served):
    frames = np.zeros((61 * 4, 24, 32, 3), np.uint8)              # 61 s at 4 frames/s: tiny file, long clip
    clip = write_video(served.root.parent / "long.avi", frames, fps=4)
    app = upload("long.avi", clip.read_bytes())
    assert "too long: 61.0 s, at most 60 s" in texts(app.error)


def test_upload_problems_are_named_before_decoding():
    from app.recognition import upload_problem
    assert "not a video type" in upload_problem("notes.txt", 10, max_upload_mb=50)
    assert "the limit is 50 MB" in upload_problem("long.MP4", 51 * 2**20, max_upload_mb=50)
    assert "empty" in upload_problem("empty.webm", 0, max_upload_mb=50)
    assert upload_problem("fine.mov", 2**20, max_upload_mb=50) is None


# --- Gallery and Results ----------------------------------------------------------------------------

def test_gallery_recognises_a_test_clip_with_one_click(served):
    app = run_page("gallery")
    assert [button.label for button in app.button].count("Recognise") == 2    # test split only
    app.button(key="recognise_0").click().run()
    assert not app.exception
    from stages.lib.served import load_bundle, predict_video
    expected, _ = predict_video(load_bundle(served.model), served.root / "data/synthetic" /
                                f"clap/signer0{CAMERA_SIGNER}_r{CAMERA_REPETITION}.avi", fast=True)
    results = [element.value for element in app.markdown if ":material/check_circle:" in element.value
               or ":material/cancel:" in element.value]
    assert len(results) == 1 and f"**{expected.label}**" in results[0]      # the prediction's own element
    assert (":material/check_circle:" in results[0]) == (expected.label == "clap")


def test_results_page_shows_metrics_table_curves_and_survives_without_dvc(served):
    app = run_page("results")
    values = [metric.value for metric in app.metric]
    assert values[0] == "90.0%" and values[4:6] == ["5.0%", "–"]        # validation first (no fast streams there)
    assert values[8:11] == ["87.5%", "100.0%", "0.860"] and values[12:14] == ["8.0%", "12.5%"]   # then test
    assert "clap" in texts(app.dataframe)                         # the per-class table
    assert len(app.get("vega_lite_chart")) == 1             # one curve: loss, train and eval
    captions = texts(app.caption)
    assert "No benchmark yet" in captions
    assert "DVC experiment table unavailable" in captions          # the test root is no DVC repository


# --- Live: the thread-shared state, without a camera ------------------------------------------------

def looped_camera(frames: np.ndarray, seconds: float, fps: float = CLIP_FPS):
    """(timestamp, frame) of a clip played in a loop, like a fake webcam."""
    for index in range(int(seconds * fps)):
        yield index / fps, frames[index % len(frames)]


def test_live_session_shows_the_mean_of_the_last_steps_and_a_sentence(served):
    from app.live_session import LiveSession, draw_overlay
    from app.state import SharedModel
    from stages.lib.served import load_bundle
    from stages.lib.streaming import SpottingSettings, StreamingRecognizer

    shared = SharedModel(load_bundle(served.model))
    session = LiveSession(shared, SpottingSettings(threshold=0.0, min_hold_seconds=0.0, smoothing_steps=3,
                                                   release_seconds=0.3))
    reference, steps = StreamingRecognizer(shared.bundle), []       # the same frames through the library alone
    snapshots = []
    for timestamp, frame in looped_camera(served.camera_frames, seconds=6):
        snapshots.append(session.process_frame(frame, timestamp))
        reference.push_camera_frame(frame, timestamp)
        if reference.stepped:
            steps.append(reference.latest_probabilities)
    fills = [snapshot.buffer_fill for snapshot in snapshots]
    assert fills == sorted(fills[:fills.index(1.0) + 1]) + fills[fills.index(1.0) + 1:]   # fills, then stays full
    assert not snapshots[0].top and snapshots[0].current_sign is None
    last = snapshots[-1]
    expected = np.mean(steps[-3:], axis=0)                            # the mean of the last 3 model steps
    assert len(last.top) == 3
    for label, probability in last.top:
        assert probability == pytest.approx(expected[served.labels.index(label)], abs=1e-6)
    assert last.frames_per_second > 0 and last.model_steps == len(steps) > 5
    assert last.sentence and all(sign.sign in served.labels and sign.sign != "_none" for sign in last.sentence)

    session.clear_sentence()
    assert session.snapshot().sentence == []
    session.update_settings(smoothing_steps=1, threshold=1.01)        # nothing is that sure
    for timestamp, frame in looped_camera(served.camera_frames, seconds=1):
        snapshot = session.process_frame(frame, 6.0 + timestamp)
    assert snapshot.current_sign is None and snapshot.state == "no sign" and snapshot.top
    assert snapshot.sentence == []
    assert snapshot.held_back is None or snapshot.held_back[0] == snapshot.top[0][0] != "_none"

    annotated = draw_overlay(served.camera_frames[0], snapshot)
    assert annotated.shape == served.camera_frames[0].shape
    assert not np.array_equal(annotated, served.camera_frames[0])             # drawn on a copy

    session.request_reset()
    assert session.process_frame(served.camera_frames[0], 7.2).buffer_fill == 1 / SEQ_LEN
    # A new stream whose clock starts again at 0 starts a new buffer too.
    session.process_frame(served.camera_frames[0], 8.0)
    assert session.process_frame(served.camera_frames[0], 0.0).buffer_fill == 1 / SEQ_LEN


def test_a_sign_first_for_a_while_under_the_threshold_is_held_back_and_the_page_says_so():
    from app.live_session import HELD_BACK_SECONDS, HeldBackTracker, LiveSnapshot
    from app.views.live import top3_markdown
    tracker = HeldBackTracker("_none")
    steps = [(0.0, "clap", 0.7), (0.5, "clap", 0.72), (1.0, "clap", 0.75), (HELD_BACK_SECONDS, "clap", 0.71)]
    seen = [tracker.update(label, probability, 0.9, time) for time, label, probability in steps]
    assert seen == [None, None, None, ("clap", 0.71)]                  # first under 0.9 for 1.5 s
    assert tracker.update("wave", 0.6, 0.9, 1.6) is None                 # another sign starts its own wait
    assert tracker.update("clap", 0.95, 0.9, 1.7) is None                # over the threshold: the spotter's
    assert tracker.update("clap", 0.8, 0.9, 1.8) is None and tracker.update("clap", 0.8, 0.9, 3.3) is not None
    assert tracker.update("_none", 0.8, 0.9, 3.4) is None                # the no-sign class never is
    assert tracker.update("clap", 0.1, 0.9, 3.5) is None                 # nor a sign the model is unsure of

    snapshot = LiveSnapshot(top=[("clap", 0.71), ("_none", 0.2), ("wave", 0.09)], threshold=0.9,
                            held_back=("clap", 0.71))
    assert "clap has been first for a while at 71%, under the threshold (90%)" in top3_markdown(snapshot)
    assert "first for a while" not in top3_markdown(LiveSnapshot(top=[("clap", 0.71)], threshold=0.9))


def test_the_live_page_and_session_use_the_cards_one_effective_rate(served):
    """A frames dataset with data.frames_fps 0 used to give a card with rate 0, and the page divided by it.

    The card now always carries the sampling rate every consumer uses (test_sample checks that such a
    dataset samples at sample.fps); the page's caption and a LiveSession work from it. The page itself
    runs in the browser test (streamlit-webrtc needs a real server).
    """
    from app.live_session import LiveSession
    from app.state import SharedModel
    from app.views.live import model_caption
    from stages.lib.served import load_bundle
    from stages.lib.streaming import default_spotting
    bundle = load_bundle(served.model)
    assert bundle.card["sample_fps"] == bundle.sampling.fps == SAMPLE_FPS > 0
    assert f"{SEQ_LEN} frames at {SAMPLE_FPS:g} frames/s (≈{SEQ_LEN / SAMPLE_FPS:.1f} s" in model_caption(bundle, "x")
    session = LiveSession(SharedModel(bundle), default_spotting())
    taken = [session.process_frame(frame, index / CLIP_FPS).buffer_fill
             for index, frame in enumerate(served.camera_frames[:25])]          # 1 s of camera
    assert taken[-1] == pytest.approx(SAMPLE_FPS / SEQ_LEN)                     # 5 frames taken in 1 s


# --- Record, Train and the model they make ---------------------------------------------------------

@pytest.fixture
def recordings_root(tmp_path, monkeypatch) -> Path:
    """The app pointed at a tiny pipeline repository (git + DVC) without recordings yet."""
    root = make_workspace(tmp_path / "repo")
    monkeypatch.setenv("SIGNLANG_ROOT", str(root))
    monkeypatch.delenv("SIGNLANG_RTC_CONFIGURATION", raising=False)
    yield root
    from app.training import cancel_run, going_run_name, read_run
    if going_run_name(root):              # a failed assertion must not leave a run going
        cancel_run(root, read_run(root, going_run_name(root)))
        wait_for(lambda: going_run_name(root) is None, 30)


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    return None


def record_button(app: AppTest):
    return next(button for button in app.button if button.label == "Record")


@pytest.mark.parametrize("field, typed, message", [
    ("sign", "../../etc", "may not contain /"),
    ("sign", "wave\\..", "may not contain \\"),
    ("sign", "..", "may not contain '..'"),
    ("sign", "_none", "'_none' is the no-sign class: choose \"No sign (idle)\" to record it."),
    ("sign", "_private", "kept for the pipeline's own classes"),
    ("sign", "CON", "'CON' is a device name on Windows"),
    ("signer", "ana/../../bob", "may not contain /"),
    ("signer", "ana\u0000", "control or invisible character (U+0000)"),
    ("signer", "a" * 41, "at most 40"),
])
def test_record_page_refuses_an_unsafe_name_and_keeps_record_off(recordings_root, field, typed, message):
    app = run_page("record")
    app.text_input(key="record_new_sign").set_value(typed if field == "sign" else "thanks")
    app.text_input(key="record_signer").set_value(typed if field == "signer" else "ana").run()
    assert not app.exception, [error.message for error in app.exception]
    assert message in texts(app.error)
    assert record_button(app).disabled
    assert not (recordings_root / "data" / "recordings").exists()          # nothing was made of the name


def test_record_page_takes_good_names_and_asks_for_the_idle_class(recordings_root):
    app = run_page("record")
    app.text_input(key="record_new_sign").set_value(" gracías ")
    app.text_input(key="record_signer").set_value("Ana María").run()
    assert not [message for message in texts(app.error).splitlines() if "may not" in message or "Type a" in message]
    assert "The camera cannot start here" in texts(app.error)        # no WebRTC under AppTest: Record waits for it
    assert record_button(app).disabled
    assert "No clips yet" in texts(app.info) and "`_none`" in texts(app.info)
    app.radio(key="record_kind").set_value("No sign (idle)").run()
    assert "**Sign:** `_none`, no sign" in texts(app.markdown)
    assert "get into position without signing" in texts(app.markdown)     # the wait that false signs fall on
    assert not [box for box in app.text_input if box.key == "record_new_sign"]


def test_record_page_counts_clips_per_sign_and_signer_and_warns(recordings_root):
    folder = recordings_root / "data" / "recordings"
    write_recordings(folder, {"wave": 3, "thanks": 12}, signers=("ana",))
    (folder / "wave" / "ana_20261201-150000.k3j9.partial.mp4").write_bytes(b"an unfinished recording")
    app = run_page("record")
    table = app.dataframe[0].value
    assert table.to_dict("records") == [
        {"sign": "thanks", "ana": 12, "clips": 12, "target": 10, "status": "enough"},
        {"sign": "wave", "ana": 3, "clips": 3, "target": 10, "status": "7 more"}]
    warnings = texts(app.warning)
    assert "`wave` has 3 clips of the 10 asked" in warnings and "`thanks` has" not in warnings
    assert "No idle clips yet" in warnings
    assert "Only one signer (ana): held-out-signer testing cannot work" in warnings
    assert "1 file in the folder will not be used: partial file" in warnings
    assert app.selectbox(key="record_sign_choice").options == ["➕ New sign", "thanks", "wave"]


def recorder_with_a_new_clip(root: Path):
    """The Record page's Recorder, driven by hand through a countdown and 1 s of frames, as the camera would."""
    from app.recorder import SAVED, Recorder, RecordingRequest
    recorder = Recorder(root / "data" / "recordings")
    recorder.start(RecordingRequest("thanks", "ana", seconds=1.0, countdown_seconds=0.2))
    for index in range(30):
        recorder.process_frame(np.full((48, 64, 3), 40 + 5 * index, np.uint8), index / 20)
    assert wait_for(lambda: recorder.status().phase == SAVED, 30), recorder.status()
    return recorder


@pytest.mark.parametrize("choice", ["Keep", "Discard"])
def test_record_page_plays_the_new_clip_back_with_keep_and_discard(recordings_root, choice):
    recorder = recorder_with_a_new_clip(recordings_root)
    clip = recorder.status().clip_path
    app = page("record")
    app.session_state["recorder"] = recorder                 # the session's Recorder, as the camera left it
    app.run()
    assert not app.exception, [error.message for error in app.exception]
    assert len(app.get("video")) == 1                           # the clip, played back (a WebM copy)
    assert f"New clip: `data/recordings/thanks/{clip.name}`" in texts(app.caption)
    next(button for button in app.button if button.label == choice).click().run()
    assert recorder.status().phase == "idle" and not app.get("video")
    assert clip.exists() == (choice == "Keep")
    if choice == "Keep":
        assert app.dataframe[0].value[["sign", "ana", "clips"]].to_dict("records") == [
            {"sign": "thanks", "ana": 1, "clips": 1}]
    else:
        assert "No clips yet" in texts(app.info) and list((recordings_root / "data/recordings").rglob("*.mp4")) == []


def train_button(app: AppTest):
    return next(button for button in app.button if button.label == "Train on my recordings")


def wait_for_run_to_end(app: AppTest, root: Path, seconds: float = 180) -> AppTest:
    from app.training import going_run_name
    assert wait_for(lambda: going_run_name(root) is None, seconds), "the run did not end"
    return app.run()


def test_train_page_shows_why_a_run_failed_in_the_pipelines_words(recordings_root):
    # Every clip two frames long: names and split look fine, but sample.min_frames (3) refuses them all.
    write_recordings(recordings_root / "data" / "recordings", {"thanks": 8, "wave": 8, "_none": 8}, frames=2)
    app = run_page("train")
    recordings = (recordings_root / "data/recordings").resolve().as_posix()
    assert "dvc exp run --temp --name rec-" in texts(app.code)              # outside the workspace
    assert f"-S data.source=folder -S data.path={recordings} -S data.split=stratified" in texts(app.code)
    train_button(app).click().run()
    assert not app.exception, [error.message for error in app.exception]
    app = wait_for_run_to_end(app, recordings_root)
    errors = texts(app.error)
    assert "The run failed" in errors
    assert "class 'thanks' has no usable clip: all 8 of its files were refused (8 too short)" in errors
    assert f"sample: not one usable clip among 24 files found under {recordings}" in errors
    assert "the sample stage stopped there" in errors
    assert "Traceback" not in errors and "File \"" not in errors


def test_a_second_click_while_a_run_goes_says_so_links_to_it_and_cancel_ends_it(recordings_root):
    from app.training import CANCELLED, RUNNING, effective_status, going_run_name, latest_run
    write_recordings(recordings_root / "data" / "recordings", {"thanks": 8, "wave": 8, "_none": 8})
    first = run_page("train")
    train_button(first).click().run()
    run = latest_run(recordings_root)
    assert going_run_name(recordings_root) == run.name

    second = run_page("train")                                 # another browser: the run shows there too
    assert f"Run {run.name}" in texts(second.subheader)
    train_button(second).click().run()
    assert f"A training run is going already: [{run.name}](train?run={run.name})" in texts(second.warning)
    assert latest_run(recordings_root).name == run.name       # and no second run started
    record = run_page("record")                                # no clip may change under a running run
    assert f"A training run ({run.name}) is reading the recordings" in texts(record.info)
    assert record_button(record).disabled

    assert wait_for(lambda: latest_run(recordings_root).status == RUNNING, 60)
    second.run()
    next(button for button in second.button if button.label == "Cancel").click().run()
    app = wait_for_run_to_end(second, recordings_root, 60)
    assert effective_status(recordings_root, latest_run(recordings_root)) == CANCELLED
    assert "The run was cancelled" in texts(app.warning)


def test_the_app_listens_on_localhost_and_starts_no_run_when_opened_to_the_network(recordings_root):
    import tomllib

    from streamlit import config

    from app.training import latest_run
    assert tomllib.loads((REPO_ROOT / ".streamlit/config.toml").read_text())["server"]["address"] == "localhost"
    write_recordings(recordings_root / "data" / "recordings", {"thanks": 8, "wave": 8, "_none": 8})
    config.set_option("server.address", "0.0.0.0")           # `streamlit run ... --server.address 0.0.0.0`
    try:
        app = run_page("train")
    finally:
        config.set_option("server.address", "localhost")
    assert "training runs are off, so nobody on the network can start them" in texts(app.warning)
    assert train_button(app).disabled and latest_run(recordings_root) is None


def test_train_page_checks_extra_params_before_anything_runs(recordings_root):
    write_recordings(recordings_root / "data" / "recordings", {"thanks": 8, "wave": 8, "_none": 8})
    app = run_page("train")
    app.text_area(key="train_overrides_text").set_value("train.epochs=3\nbase.image_size=8").run()
    assert "base.image_size is 8; it must be at least 32" in texts(app.error)
    assert not [button for button in app.button if button.label == "Train on my recordings"]
    app.text_area(key="train_overrides_text").set_value("data.path=/etc").run()
    assert "data.* cannot be overridden here" in texts(app.error)


def test_model_page_offers_the_model_trained_on_recordings_with_one_click(served):
    from stages.lib.served import copy_bundle
    kept_dir = served.root / "models" / "recordings"
    kept = copy_bundle(served.model, kept_dir / "rec-20261201-150000", {"metrics": {"test_accuracy": 0.75}})
    try:
        app = run_page("model")
        assert "Trained on your recordings:** `models/recordings/rec-20261201-150000/model.keras`" in \
            texts(app.markdown)
        assert "test accuracy 75%" in texts(app.markdown)
        next(button for button in app.button if button.label == "Use it on the Live page").click().run()
        assert not app.exception
        assert app.session_state["selected_model"] == str(kept)
        assert app.selectbox[0].value == "models/recordings/rec-20261201-150000/model.keras"
        assert not [button for button in app.button if button.label == "Use it on the Live page"]
        assert "75.0%" in texts(app.dataframe) or "0.75" in texts(app.dataframe)      # its figures, from its card
    finally:
        shutil.rmtree(kept_dir)


# --- settings ---------------------------------------------------------------------------------------

def test_rtc_configuration_defaults_to_no_ice_servers_and_reads_env_then_secrets(monkeypatch):
    from app.settings import rtc_configuration
    monkeypatch.delenv("SIGNLANG_RTC_CONFIGURATION", raising=False)
    assert rtc_configuration()[0] == {"iceServers": []}
    turn = {"iceServers": [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]}
    assert rtc_configuration(lambda: turn)[0] == turn
    monkeypatch.setenv("SIGNLANG_RTC_CONFIGURATION", json.dumps(turn))
    configuration, source = rtc_configuration(lambda: {"iceServers": []})
    assert configuration == turn and "SIGNLANG_RTC_CONFIGURATION" in source
    monkeypatch.setenv("SIGNLANG_RTC_CONFIGURATION", "{not json")
    with pytest.raises(ValueError, match="SIGNLANG_RTC_CONFIGURATION is not valid JSON"):
        rtc_configuration()
    monkeypatch.setenv("SIGNLANG_RTC_CONFIGURATION", '{"urls": []}')
    with pytest.raises(ValueError, match='"iceServers" list'):
        rtc_configuration()


@pytest.mark.parametrize("key, value, message", [
    ("max_upload_mb", 0, r"app.max_upload_mb is 0; it must be at least 1"),
    ("sentence_length", 0, r"app.sentence_length is 0; it must be at least 1"),
    ("gallery_clips", "3", r"app.gallery_clips must be a whole number"),
])
def test_app_params_are_validated(key, value, message):
    from stages.lib.params import ParamsError, validate_params
    app = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["app"]
    validate_params({"app": app})
    with pytest.raises(ParamsError, match=message):
        validate_params({"app": {**app, key: value}})


@pytest.mark.parametrize("caught", ["empty", "cut off"])
def test_settings_read_while_a_run_rewrites_params_yaml_see_the_whole_file(tmp_path, monkeypatch, caught):
    """A training run's `dvc exp run` rewrites params.yaml in place: a page drawn meanwhile waits for all of it."""
    import threading

    from app.settings import load_settings
    whole = (REPO_ROOT / "params.yaml").read_text()
    params_file = tmp_path / "params.yaml"
    params_file.write_text("" if caught == "empty" else whole[:len(whole) // 2])   # mid-write, as DVC leaves it
    monkeypatch.setenv("SIGNLANG_ROOT", str(tmp_path))
    writer = threading.Timer(0.3, params_file.write_text, args=(whole,))
    writer.start()
    try:
        settings = load_settings()
    finally:
        writer.join()
    assert settings.params == yaml.safe_load(whole)


def test_upload_limit_in_params_matches_the_streamlit_config():
    import tomllib
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert config["server"]["maxUploadSize"] == params["app"]["max_upload_mb"]


def test_experiment_rows_come_from_dvc_exp_show_json():
    from app.reports import experiment_rows, run_dvc_exp_show
    shown = [{"rev": "workspace", "name": None, "data": {
        "timestamp": None,
        "params": {"params.yaml": {"data": {"train": {"learning_rate": 0.001}, "paths": {"model": "m"}}}},
        "metrics": {"reports/metrics.json": {"data": {"test_accuracy": 0.9, "backbone_weights": "imagenet"}},
                    "reports/train/metrics.json": {"data": {"step": 3}}}},
        "experiments": [{"name": "lr3e-4", "revs": [{"rev": "abc1234def", "name": "lr3e-4", "data": {
            "params": {"params.yaml": {"data": {"train": {"learning_rate": 0.0003}}}},
            "metrics": {"reports/metrics.json": {"data": {"test_accuracy": 0.95}}}}}]}]}]
    rows = experiment_rows(shown)
    assert [row["experiment"] for row in rows] == ["workspace", "lr3e-4"]
    assert [row["test_accuracy"] for row in rows] == [0.9, 0.95]
    assert rows[1]["param train.learning_rate"] == 0.0003 and "param paths.model" not in rows[0]
    with pytest.raises(RuntimeError, match="not a DVC repository"):
        run_dvc_exp_show(Path("/"))


def test_a_class_named_with_html_is_shown_as_text_on_the_gallery():
    """A class folder named `<b>x</b>` (legal on disk) must never become markup in the HTML-enabled verdict."""
    from app.recognition import Recognition
    from app.views.gallery import result_markdown
    from stages.lib.served import prediction_from_probabilities
    labels = ["<b>x</b>", "<img src=y onerror=alert(1)>", "wave"]
    prediction = prediction_from_probabilities(np.array([0.7, 0.2, 0.1]), labels, top_k=3)
    shown = result_markdown(Recognition(prediction, None), "<b>x</b>")
    assert "<b>" not in shown and "<img" not in shown
    assert "&lt;b&gt;x&lt;/b&gt;" in shown and "&lt;img src=y onerror=alert(1)&gt;" in shown
    refused = result_markdown(Recognition(None, None, problem="<script>bad</script>"), "wave")
    assert "<script>" not in refused
