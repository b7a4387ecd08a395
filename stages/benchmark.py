"""Stage `benchmark`: measure speed and memory, never claim them. Writes `paths.benchmark`.

Usage:
    python -m stages.benchmark     # reads params.yaml: backbone, base.image_size, base.seq_len, sample.fps, benchmark
    dvc repro -f benchmark             # measure again on request (it re-runs by itself when code changes)
    dvc metrics diff                   # compare speed across commits and experiments

What it times is a reference model, not the trained one: the backbone of
`backbone.weights` at `base.image_size`, and a head of `benchmark.head_lstm_units`
with random weights (speed does not depend on what a network learned), on
frames of drawn signers rendered here. So the stage reads no dataset and no
model, and re-runs only when the code, the backbone or the input size
change, never for an experiment on the head.

Every figure is measured in this run, after a warm-up, over several
repetitions, reporting min and median, with the reference it is judged
against measured in the same run (the machine may be shared and noisy, so
ratios are what to compare):
- extraction: frames/s of the extract stage's pipeline (HDF5 read, TFLite,
  cache write) on fresh clips vs the raw TFLite engine on frames in memory;
  plain-Keras tf.function frames/s for context; peak RSS of extraction in a
  fresh process at two dataset sizes (memory must not grow with clips);
- live step: one new frame through the backbone + the head over the ring
  buffer, p50/p95 ms, vs plain Keras eager calls doing the same;
- full window: latency of the Keras full graph and of its whole-graph TFLite file;
- training: one head epoch on windows of embeddings vs one end-to-end epoch of
  the same windows through the frozen backbone (a few steps timed,
  extrapolated); the ratio compares the best of each;
- int8: the encoder quantised to full integers (calibrated on half of the
  rendered frames) vs fp32 TFLite on the other half: speed and cosine
  similarity of the embeddings. The pipeline would offer it only at >= 1.5x
  the speed with cosine >= 0.99; the figures say whether it does.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import keras
import numpy as np

from stages.lib.backbone import EMBEDDING_SIZE, FRAME_ENCODER_NAME, build_frame_encoder, check_recorded_weights
from stages.lib.engines import (
    KerasFrameEngine,
    TFLiteFrameEngine,
    TFLiteModel,
    cached_tflite,
    convert_to_int8_tflite,
    convert_to_tflite,
    frame_encoder_tflite_path,
)
from stages.lib.machine import cpu_description
from stages.lib.models import build_full_model, build_head
from stages.lib.params import load_params
from stages.lib.served import ServedBundle
from stages.lib.storage import append_rows, create_frames_dataset, write_clip_columns, write_json, write_offsets
from stages.lib.streaming import StreamingRecognizer
from stages.lib.synthetic import SIGNS, make_signer, render_clip
from stages.lib.video import Sampling, prepare_frame

INT8_CALIBRATION_FRAMES = 200   # representative frames for the int8 activation ranges
INT8_TIMED_FRAMES = 100         # held-out frames timed and compared
# Run in a fresh interpreter so its peak RSS is extraction's alone.
EXTRACT_MEMORY_PROBE = """
import json, resource, sys, tempfile
from pathlib import Path
from stages.extract import fill_cache
from stages.lib.engines import FrameEngineRecipe
frames_path, tflite_path, clips, image_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
recipe = FrameEngineRecipe("tflite", image_size, tflite_flatbuffer=Path(tflite_path).read_bytes())
with tempfile.TemporaryDirectory() as cache:
    fill_cache(Path(frames_path), list(range(clips)), recipe, Path(cache), "probe")
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def timings(function: Callable[[], object], repeats: int, warmup: int = 1) -> np.ndarray:
    """Seconds per call, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return np.array(durations)


def rate_summary(prefix: str, seconds: np.ndarray, items_per_call: int) -> dict:
    """frames/s best (from the fastest call) and median."""
    return {f"{prefix}_fps_best": round(items_per_call / seconds.min(), 1),
            f"{prefix}_fps_median": round(items_per_call / float(np.median(seconds)), 1)}


def latency_summary(prefix: str, seconds: np.ndarray) -> dict:
    milliseconds = seconds * 1000.0
    return {f"{prefix}_ms_p50": round(float(np.percentile(milliseconds, 50)), 2),
            f"{prefix}_ms_p95": round(float(np.percentile(milliseconds, 95)), 2),
            f"{prefix}_ms_min": round(float(milliseconds.min()), 2)}


def rendered_clips(count: int, frames_per_clip: int, image_size: int) -> list[np.ndarray]:
    """`count` clips of drawn signers, prepared like sampled frames: each (frames, S, S, 3) uint8 RGB.

    Real-looking pixels matter here: the frames file is compressed, and noise
    would compress (and read) differently from a person in a room.
    """
    clips = []
    for index in range(count):
        signer = make_signer(index, seed=7, width=320, height=240)
        bgr = render_clip(SIGNS[index % len(SIGNS)], signer, repetition=0, seed=7, fps=25, seconds=2.0)
        positions = np.linspace(0, len(bgr) - 1, frames_per_clip).round().astype(int)
        clips.append(np.stack([prepare_frame(bgr[i], image_size) for i in positions]))
    return clips


def write_frames_file(path: Path, clips: list[np.ndarray]) -> None:
    """A frames file in the sample stage's flat layout, for the extraction pipeline to read."""
    with h5py.File(path, "w") as handle:
        append_rows(create_frames_dataset(handle, clips[0].shape[1]), np.concatenate(clips))
        write_offsets(handle, [len(clip) for clip in clips])
        names = [f"benchmark/{index}" for index in range(len(clips))]
        write_clip_columns(handle, {"paths": names, "labels": names, "splits": ["train"] * len(clips),
                                    "signers": [""] * len(clips)})


def benchmark_extraction(encoder, engine: TFLiteFrameEngine, tflite_path: Path, frames_path: Path,
                         clips: list[np.ndarray], settings: dict) -> dict:
    """Extraction pipeline vs raw engine, same run; Keras tf.function for context; peak RSS at two sizes."""
    from stages.extract import fill_cache
    from stages.lib.engines import FrameEngineRecipe
    count = settings["extract_clips"]
    image_size = clips[0].shape[1]
    # The stage's own path: the engine is built from this recipe in each run, as extract does.
    recipe = FrameEngineRecipe("tflite", image_size, tflite_flatbuffer=tflite_path.read_bytes())
    flat = np.concatenate(clips[:count])                                     # (frames, H, W, 3)
    raw = timings(lambda: engine.embed(flat), settings["repeats"])
    keras_engine = KerasFrameEngine(encoder)
    reference_keras = timings(lambda: keras_engine.embed(flat), settings["repeats"])

    def extract_fresh() -> None:
        with tempfile.TemporaryDirectory() as cache:
            fill_cache(frames_path, list(range(count)), recipe, Path(cache), "benchmark")
    pipeline = timings(extract_fresh, settings["repeats"])
    results = {**rate_summary("extract_pipeline", pipeline, len(flat)),
               **rate_summary("extract_engine_raw", raw, len(flat)),
               **rate_summary("keras_tf_function", reference_keras, len(flat))}
    results["extract_pipeline_vs_raw_engine"] = round(results["extract_pipeline_fps_best"]
                                                      / results["extract_engine_raw_fps_best"], 3)
    for clip_count in sorted({max(count // 2, 1), len(clips)}):
        output = subprocess.run([sys.executable, "-c", EXTRACT_MEMORY_PROBE, str(frames_path), str(tflite_path),
                                 str(clip_count), str(image_size)], capture_output=True, text=True, check=True)
        results[f"extract_peak_rss_mb_{clip_count}_clips"] = round(
            json.loads(output.stdout.splitlines()[-1])["peak_rss_mb"], 1)
    return results


def benchmark_live_step(bundle: ServedBundle, encoder, head, settings: dict) -> dict:
    """One new frame through the backbone + head over a full ring buffer: TFLite path vs Keras eager."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (bundle.image_size, bundle.image_size, 3), dtype=np.uint8)
    recognizer = StreamingRecognizer(bundle)
    for _ in range(bundle.seq_len):
        recognizer.push_prepared_frame(frame)                               # fill the buffer first
    fast = timings(lambda: recognizer.push_prepared_frame(frame), settings["live_steps"], warmup=5)
    buffer = np.zeros((1, bundle.seq_len, EMBEDDING_SIZE), np.float32)

    def eager_step() -> None:
        embedding = encoder(frame[None], training=False).numpy()           # (1, 1280)
        buffer[0, :-1] = buffer[0, 1:]
        buffer[0, -1] = embedding[0]
        head(buffer, training=False).numpy()
    eager = timings(eager_step, settings["eager_steps"], warmup=2)
    results = {**latency_summary("live_step_tflite", fast), **latency_summary("live_step_keras_eager", eager)}
    results["live_step_tflite_fps"] = round(1.0 / float(np.median(fast)), 1)
    results["live_step_speedup_vs_eager"] = round(float(np.median(eager)) / float(np.median(fast)), 1)
    return results


def benchmark_full_window(model, window: np.ndarray, settings: dict) -> dict:
    """One window (1, seq_len, H, W, 3) through the Keras full graph and through its whole-graph TFLite."""
    keras_seconds = timings(lambda: model.predict_on_batch(window), settings["repeats"])
    tflite = TFLiteModel(convert_to_tflite(model, window.shape))
    tflite_seconds = timings(lambda: tflite.run(window), settings["repeats"])
    return {**latency_summary("full_clip_keras", keras_seconds), **latency_summary("full_clip_tflite", tflite_seconds)}


def benchmark_training(model, seq_len: int, num_classes: int, clips: list[np.ndarray], settings: dict) -> dict:
    """Head epoch on windows of embeddings vs an end-to-end epoch through the frozen backbone (extrapolated)."""
    windows, batch_size = settings["train_windows"], settings["head_batch_size"]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(windows, seq_len, EMBEDDING_SIZE)).astype(np.float32)
    y = rng.integers(0, num_classes, windows)
    head = build_head(seq_len, num_classes, settings["head_lstm_units"], dropout=0.3)
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    head.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)              # warm-up: tracing
    head_epoch = timings(lambda: head.fit(x, y, batch_size=batch_size, epochs=1, verbose=0),
                         settings["repeats"], warmup=0)

    frozen = keras.models.clone_model(model)                                # frozen backbone, trainable head
    frozen.get_layer(FRAME_ENCODER_NAME).trainable = False
    frozen.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # A step of e2e_batch_windows windows, scaled to the epoch per window: a full head batch of 224 px
    # frames (32 x 20) held 11 GB of activations here, and on a CPU a step's time grows with its frames.
    step_windows = settings["e2e_batch_windows"]
    frames = np.stack([clip[:seq_len] for clip in (clips * step_windows)[:step_windows]])   # (windows, T, H, W, 3)
    labels = np.zeros(len(frames), np.int64)
    step = timings(lambda: frozen.train_on_batch(frames, labels), settings["e2e_steps"], warmup=1)
    epoch_steps = windows / step_windows
    return {"head_epoch_seconds_min": round(float(head_epoch.min()), 3),
            "head_epoch_seconds_median": round(float(np.median(head_epoch)), 3),
            "end_to_end_frozen_step_seconds_min": round(float(step.min()), 3),
            "end_to_end_frozen_step_seconds_median": round(float(np.median(step)), 3),
            "end_to_end_frozen_step_windows": step_windows,
            "end_to_end_frozen_epoch_seconds_estimated": round(float(np.median(step)) * epoch_steps, 1),
            # Best-of-N for both sides: a ~1 s epoch is easily doubled by a noisy neighbour.
            "head_epoch_speedup_vs_end_to_end": round(float(step.min()) * epoch_steps / float(head_epoch.min()), 1),
            "train_windows": windows, "train_batch_size": batch_size}


def benchmark_int8(encoder, fp32_engine: TFLiteFrameEngine, clips: list[np.ndarray], settings: dict) -> dict:
    """Full-integer encoder vs fp32 TFLite, same run: speed, and how close the embeddings stay."""
    frames = np.concatenate(clips)                                           # (frames, H, W, 3)
    calibration, held_out = frames[0::2][:INT8_CALIBRATION_FRAMES], frames[1::2][:INT8_TIMED_FRAMES]
    int8_engine = TFLiteFrameEngine(convert_to_int8_tflite(encoder, calibration))
    fp32_seconds = timings(lambda: fp32_engine.embed(held_out), settings["repeats"])
    int8_seconds = timings(lambda: int8_engine.embed(held_out), settings["repeats"])
    reference, quantised = fp32_engine.embed(held_out), int8_engine.embed(held_out)
    cosine = (reference * quantised).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(quantised, axis=1))
    speedup = float(fp32_seconds.min() / int8_seconds.min())
    return {**rate_summary("int8_engine", int8_seconds, len(held_out)),
            "int8_speedup_vs_fp32": round(speedup, 2), "int8_cosine_min": round(float(cosine.min()), 4),
            "int8_cosine_median": round(float(np.median(cosine)), 4),
            "int8_offered": bool(speedup >= 1.5 and cosine.min() >= 0.99)}


def reference_bundle(folder: Path, encoder_tflite: bytes, head, seq_len: int, sampling: Sampling,
                     num_classes: int) -> ServedBundle:
    """The live path's two TFLite parts, as a bundle the streaming recognizer can run."""
    (folder / "encoder.tflite").write_bytes(encoder_tflite)
    (folder / "head.tflite").write_bytes(convert_to_tflite(head, (1, seq_len, EMBEDDING_SIZE)))
    card = {"labels": [f"class{i}" for i in range(num_classes)], "seq_len": seq_len, "sampling": sampling.as_dict(),
            "files": {"frame_encoder_tflite": "encoder.tflite", "head_tflite": "head.tflite"}}
    return ServedBundle(folder / "reference.keras", card)


def main() -> None:
    params = load_params()
    settings, paths = params["benchmark"], params["paths"]
    image_size, seq_len = int(params["base"]["image_size"]), int(params["base"]["seq_len"])
    sampling = Sampling(fps=float(params["sample"]["fps"]), image_size=image_size)
    num_classes = 12
    keras.utils.set_random_seed(0)
    encoder, weights_source = build_frame_encoder(image_size, params["backbone"]["weights"])
    check_recorded_weights(weights_source, paths["backbone_weights"])
    tflite_path = frame_encoder_tflite_path(weights_source, image_size)
    encoder_tflite = cached_tflite(encoder, tflite_path, (1, image_size, image_size, 3))
    head = build_head(seq_len, num_classes, settings["head_lstm_units"], dropout=0.3)
    model = build_full_model(encoder, head, seq_len)
    frames_per_clip = max(int(round(settings["clip_seconds"] * sampling.fps)), seq_len)
    clips = rendered_clips(settings["extract_clips"] * 4, frames_per_clip, image_size)
    results = {**cpu_description(), "image_size": image_size, "seq_len": seq_len, "sample_fps": sampling.fps,
               "weights_source": weights_source}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        frames_path = scratch / "frames.h5"
        write_frames_file(frames_path, clips)
        bundle = reference_bundle(scratch, encoder_tflite, head, seq_len, sampling, num_classes)
        engine = TFLiteFrameEngine(encoder_tflite)
        for name, measure in (
                ("extraction", lambda: benchmark_extraction(encoder, engine, tflite_path, frames_path, clips,
                                                            settings)),
                ("live step", lambda: benchmark_live_step(bundle, encoder, head, settings)),
                ("full window", lambda: benchmark_full_window(model, clips[0][None, :seq_len], settings)),
                ("training", lambda: benchmark_training(model, seq_len, num_classes, clips, settings)),
                ("int8", lambda: benchmark_int8(encoder, engine, clips, settings))):
            started = time.perf_counter()
            results.update(measure())
            print(f"benchmark: {name} measured in {time.perf_counter() - started:.0f} s", flush=True)
    write_json(paths["benchmark"], results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
