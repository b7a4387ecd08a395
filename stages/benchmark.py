"""Stage `benchmark`: measure speed and memory, never claim them. Writes `paths.benchmark`.

Usage:
    python -m stages.benchmark         # reads params.yaml: benchmark
    dvc metrics diff                   # compare speed across commits and experiments

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
- full clip: latency of the served Keras graph and of its TFLite file;
- training: one head epoch on cached embeddings vs one end-to-end epoch of the
  same clips through the frozen backbone (a few steps timed, extrapolated);
  the ratio compares the best of each.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import h5py
import keras
import numpy as np

from stages.lib.embeddings import load_split
from stages.lib.engines import KerasFrameEngine, TFLiteModel
from stages.lib.params import load_params
from stages.lib.served import load_bundle
from stages.lib.streaming import StreamingRecognizer
from stages.lib.storage import write_json

# Run in a fresh interpreter so its peak RSS is extraction's alone.
EXTRACT_MEMORY_PROBE = """
import json, resource, sys, tempfile
from pathlib import Path
from stages.extract import fill_cache
from stages.lib.engines import TFLiteFrameEngine
frames_path, tflite_path, clips = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = TFLiteFrameEngine(Path(tflite_path).read_bytes())
with tempfile.TemporaryDirectory() as cache:
    fill_cache(Path(frames_path), list(range(clips)), engine, Path(cache), "probe")
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


def cpu_description() -> dict:
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return {"cpu_model": model, "cpu_cores": os.cpu_count()}


def benchmark_extraction(bundle, frames_path: str, settings: dict) -> dict:
    """Extraction pipeline vs raw engine, same run; Keras tf.function for context; peak RSS at two sizes."""
    from stages.extract import fill_cache
    clips = settings["extract_clips"]
    with h5py.File(frames_path, "r") as handle:
        frames = handle["frames"][:clips]                                   # (clips, T, H, W, 3)
    flat = frames.reshape((-1,) + frames.shape[2:])                         # (clips*T, H, W, 3)
    engine = bundle.frame_engine
    raw = timings(lambda: engine.embed(flat), settings["repeats"])
    keras_engine = KerasFrameEngine(bundle.keras_model.get_layer("frame_encoder_per_frame").layer)
    reference_keras = timings(lambda: keras_engine.embed(flat), settings["repeats"])

    def extract_fresh() -> None:
        with tempfile.TemporaryDirectory() as cache:
            fill_cache(Path(frames_path), list(range(clips)), engine, Path(cache), "benchmark")
    pipeline = timings(extract_fresh, settings["repeats"])
    results = {**rate_summary("extract_pipeline", pipeline, len(flat)),
               **rate_summary("extract_engine_raw", raw, len(flat)),
               **rate_summary("keras_tf_function", reference_keras, len(flat))}
    results["extract_pipeline_vs_raw_engine"] = round(results["extract_pipeline_fps_best"]
                                                      / results["extract_engine_raw_fps_best"], 3)
    tflite_path = bundle.file("frame_encoder_tflite")
    with h5py.File(frames_path, "r") as handle:
        available = handle["frames"].shape[0]
    for count in sorted({min(max(clips // 2, 1), available), min(clips * 4, available)}):
        output = subprocess.run([sys.executable, "-c", EXTRACT_MEMORY_PROBE, frames_path, str(tflite_path),
                                 str(count)], capture_output=True, text=True, check=True)
        results[f"extract_peak_rss_mb_{count}_clips"] = round(json.loads(output.stdout.splitlines()[-1])["peak_rss_mb"], 1)
    return results


def benchmark_live_step(bundle, settings: dict) -> dict:
    """One new frame through the backbone + head over a full ring buffer: TFLite path vs Keras eager."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (bundle.image_size, bundle.image_size, 3), dtype=np.uint8)
    recognizer = StreamingRecognizer(bundle)
    for _ in range(bundle.seq_len):
        recognizer.push_prepared_frame(frame)                               # fill the buffer first
    fast = timings(lambda: recognizer.push_prepared_frame(frame), settings["live_steps"], warmup=5)

    encoder = bundle.keras_model.get_layer("frame_encoder_per_frame").layer
    head = bundle.keras_model.get_layer("bilstm_head")
    buffer = np.zeros((1, bundle.seq_len, 1280), np.float32)

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


def benchmark_full_clip(bundle, frames_path: str, settings: dict) -> dict:
    with h5py.File(frames_path, "r") as handle:
        clip = handle["frames"][:1]                                         # (1, T, H, W, 3)
    model = bundle.keras_model
    keras_seconds = timings(lambda: model.predict_on_batch(clip), settings["repeats"])
    tflite = TFLiteModel(bundle.file("model_tflite").read_bytes())
    tflite_seconds = timings(lambda: tflite.run(clip), settings["repeats"])
    return {**latency_summary("full_clip_keras", keras_seconds), **latency_summary("full_clip_tflite", tflite_seconds)}


def benchmark_training(bundle, embeddings_path: str, frames_path: str, settings: dict, train_settings: dict) -> dict:
    """Head epoch on cached embeddings vs an end-to-end epoch through the frozen backbone (extrapolated)."""
    from stages.lib.models import build_head
    x_train, y_train, _ = load_split(embeddings_path, "train", bundle.labels)
    batch_size = train_settings["batch_size"]
    head = build_head(bundle.seq_len, len(bundle.labels), train_settings["lstm_units"], train_settings["dropout"])
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    head.fit(x_train, y_train, batch_size=batch_size, epochs=1, verbose=0)   # warm-up: tracing
    head_epoch = timings(lambda: head.fit(x_train, y_train, batch_size=batch_size, epochs=1, verbose=0),
                         settings["repeats"], warmup=0)

    model = keras.models.clone_model(bundle.keras_model)                     # frozen backbone, trainable head
    model.get_layer("frame_encoder_per_frame").trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with h5py.File(frames_path, "r") as handle:
        frames = handle["frames"][:batch_size]                              # (batch, T, H, W, 3)
    labels = np.zeros(len(frames), np.int64)
    step = timings(lambda: model.train_on_batch(frames, labels), settings["e2e_steps"], warmup=1)
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    end_to_end_epoch = float(np.median(step)) * steps_per_epoch
    return {"head_epoch_seconds_min": round(float(head_epoch.min()), 3),
            "head_epoch_seconds_median": round(float(np.median(head_epoch)), 3),
            "end_to_end_frozen_step_seconds_min": round(float(step.min()), 3),
            "end_to_end_frozen_step_seconds_median": round(float(np.median(step)), 3),
            "end_to_end_frozen_epoch_seconds_estimated": round(end_to_end_epoch, 1),
            # Best-of-N for both sides: a ~0.5 s epoch is easily doubled by a noisy neighbour.
            "head_epoch_speedup_vs_end_to_end": round(float(step.min()) * steps_per_epoch / float(head_epoch.min()), 1),
            "train_clips": int(len(x_train)), "train_batch_size": batch_size}


def main() -> None:
    params = load_params()
    settings, paths = params["benchmark"], params["paths"]
    bundle = load_bundle(paths["model"])
    results = {**cpu_description(), "image_size": bundle.image_size, "seq_len": bundle.seq_len}
    for name, measure in (
            ("extraction", lambda: benchmark_extraction(bundle, paths["frames"], settings)),
            ("live step", lambda: benchmark_live_step(bundle, settings)),
            ("full clip", lambda: benchmark_full_clip(bundle, paths["frames"], settings)),
            ("training", lambda: benchmark_training(bundle, paths["embeddings"], paths["frames"], settings,
                                                    params["train"]))):
        started = time.perf_counter()
        results.update(measure())
        print(f"benchmark: {name} measured in {time.perf_counter() - started:.0f} s", flush=True)
    write_json(paths["benchmark"], results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
