"""How sample and extract scale with the compute engine on this machine: a script, not a DVC stage.

Usage:
    python -m stages.tools.benchmark_scaling                  # writes reports/scaling.json and prints it
    python -m stages.tools.benchmark_scaling --clips 16 --repeats 1

Times the stages' own per-clip work through stages/lib/compute.py, on the same
inputs, with `compute.engine: local`, and with `ray` on 1 and on 2 workers
(`compute.cpus_per_worker: 1`), all on one Ray started here:
- sample: `sample_one` on real-size video, 640x480 at 25 frames/s, H.264
  (written with PyAV's libx264) when this OpenCV decodes it, else mp4v;
  decoded source frames per second;
- extract: `ClipEmbedder` (TFLite MobileNetV2 at base.image_size) on the
  sampled frames, read back from a frames file as a Ray worker reads them;
  embedded frames per second.
For each: the wall time of the run (the worker pool's start-up included), the
seconds to the first result, and the steady rate once every worker is busy
(results after the first quarter). Then what Ray costs on top of that for a
small dataset: the seconds `ray.init` takes to start a Ray here (a run with
`compute.address: null` pays it in sample and again in extract), and a
4-clip extract end to end, local vs a fresh Ray. The machine may be shared,
so the load average before each measurement is recorded with the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from stages.extract import ClipEmbedder, ClipJob, clip_key
from stages.lib.backbone import build_frame_encoder
from stages.lib.compute import ComputeSettings, connect, map_in_order, map_on_workers
from stages.lib.datasets import FoundFile
from stages.lib.engines import FrameEngineRecipe, frame_encoder_tflite_path
from stages.lib.machine import cpu_description
from stages.lib.params import load_params
from stages.lib.storage import append_rows, clip_slice, create_frames_dataset, write_json, write_offsets
from stages.lib.synthetic import SIGNS, make_signer, render_clip
from stages.lib.video import Sampling
from stages.sample import SampleJob, sample_one

VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS = 640, 480, 25   # a webcam's VGA: the smallest real-size video
DISTINCT_CLIPS = 8        # rendered once each (about 1.5 s apiece), then copied: decoding cost is per file
SMALL_DATASET_CLIPS = 4
OUTPUT = Path("reports/scaling.json")


def configurations() -> dict[str, ComputeSettings]:
    return {"local": ComputeSettings(),
            "ray_1_worker": ComputeSettings("ray", None, workers=1, cpus_per_worker=1),
            "ray_2_workers": ComputeSettings("ray", None, workers=2, cpus_per_worker=1)}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def write_videos(folder: Path, clips: int, seconds: float) -> str:
    """`clips` 640x480 videos of drawn signers under `folder`; returns the codec used (h264 or mp4v)."""
    rendered = [render_clip(SIGNS[index % len(SIGNS)], make_signer(index, seed=7, width=VIDEO_WIDTH,
                                                                   height=VIDEO_HEIGHT),
                            repetition=0, seed=7, fps=VIDEO_FPS, seconds=seconds)     # (frames, 480, 640, 3) BGR
                for index in range(min(clips, DISTINCT_CLIPS))]
    probe = folder / "probe.mp4"
    codec = "h264" if write_h264(probe, rendered[0]) and opencv_decodes(probe) else "mp4v"
    probe.unlink(missing_ok=True)
    write = write_h264 if codec == "h264" else write_mp4v
    for index in range(clips):
        path = folder / f"clip{index:03d}.mp4"
        if index < len(rendered):
            write(path, rendered[index])
        else:
            shutil.copy(folder / f"clip{index % len(rendered):03d}.mp4", path)
    return codec


def write_h264(path: Path, frames_bgr: np.ndarray) -> bool:
    """H.264 through PyAV's libx264 (OpenCV's wheels cannot encode it); False where that is unavailable."""
    try:
        import av
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=VIDEO_FPS)
            stream.width, stream.height, stream.pix_fmt = VIDEO_WIDTH, VIDEO_HEIGHT, "yuv420p"
            for frame in frames_bgr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return True
    except Exception:          # no PyAV, or a build without libx264: mp4v instead
        return False


def write_mp4v(path: Path, frames_bgr: np.ndarray) -> None:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (VIDEO_WIDTH, VIDEO_HEIGHT))
    for frame in frames_bgr:
        writer.write(frame)
    writer.release()


def opencv_decodes(path: Path) -> bool:
    import cv2
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    capture.release()
    return bool(ok) and frame.shape[:2] == (VIDEO_HEIGHT, VIDEO_WIDTH)


def timed(results: Iterable, count_of: Callable[[object], int]) -> tuple[list, dict]:
    """Drain `results`, timing each arrival; (results, wall/first-result/steady figures in `count_of` units)."""
    started = time.perf_counter()
    arrivals, counts, kept = [], [], []
    for result in results:
        arrivals.append(time.perf_counter() - started)
        counts.append(count_of(result))
        kept.append(result)
    quarter = len(arrivals) // 4
    steady_seconds = arrivals[-1] - arrivals[quarter]
    return kept, {"wall_seconds": round(arrivals[-1], 2), "first_result_seconds": round(arrivals[0], 2),
                  "fps_wall": round(sum(counts) / arrivals[-1], 1),
                  "fps_steady": round(sum(counts[quarter + 1:]) / steady_seconds, 1) if steady_seconds > 0 else None}


def best_of(repeats: int, measure: Callable[[], tuple[list, dict]]) -> tuple[list, dict]:
    """The run with the best steady rate of `repeats` (a shared machine: the least disturbed one)."""
    runs = []
    for _ in range(repeats):
        before = load_average()
        results, figures = measure()
        runs.append((results, {**figures, "load_average_before": before}))
    return max(runs, key=lambda run: run[1]["fps_steady"] or 0.0)


def frames_file(path: Path, clips: list[np.ndarray]) -> list[slice]:
    """The sampled clips in the frames file's flat layout; each clip's rows."""
    import h5py
    with h5py.File(path, "w") as handle:
        append_rows(create_frames_dataset(handle, clips[0].shape[1]), np.concatenate(clips))
        offsets = write_offsets(handle, [len(clip) for clip in clips])
    return [clip_slice(offsets, index) for index in range(len(clips))]


def clip_jobs(clips: list[np.ndarray], rows: list[slice]) -> Iterator[ClipJob]:
    return (ClipJob(index, rows[index], clip_key(frames), frames) for index, frames in enumerate(clips))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="clips per run (default 32)")
    parser.add_argument("--seconds", type=float, default=2.4, help="sign length of each clip (default 2.4)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration, best kept (default 2)")
    args = parser.parse_args(argv)
    params = load_params()
    image_size = int(params["base"]["image_size"])
    sampling = Sampling(fps=float(params["sample"]["fps"]), image_size=image_size)
    encoder, weights_source = build_frame_encoder(image_size, params["backbone"]["weights"])
    recipe = FrameEngineRecipe.from_encoder(encoder, "tflite", tflite_cache=frame_encoder_tflite_path(weights_source,
                                                                                                      image_size))
    report: dict = {**cpu_description(), "image_size": image_size, "sample_fps": sampling.fps,
                    "video": {"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "fps": VIDEO_FPS},
                    "clips": args.clips, "repeats": args.repeats, "cpus_per_worker": 1}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "videos").mkdir()
        report["video"]["codec"] = write_videos(scratch / "videos", args.clips, args.seconds)
        jobs = [SampleJob(FoundFile(path.absolute(), "sign"), path.name, "train", sampling, 0.0)
                for path in sorted((scratch / "videos").glob("*.mp4"))]
        embedder_args = (str(scratch / "frames.h5"), recipe)
        local = ComputeSettings()

        def sample_run(settings: ComputeSettings):
            return timed(map_in_order(sample_one, jobs, settings), lambda result: result.row["num_frames"])

        def extract_run(settings: ComputeSettings, count: int | None = None):
            return timed(map_on_workers(ClipEmbedder, embedder_args, clip_jobs(clips[:count], rows), settings),
                         lambda result: len(result.embeddings))

        # Local first: its process pool must not fork a process that already runs Ray's threads.
        sample, extract, small = {}, {}, {}
        sampled, sample["local"] = best_of(args.repeats, lambda: sample_run(local))
        clips = [result.frames for result in sampled]                     # each (frames, S, S, 3) uint8
        rows = frames_file(scratch / "frames.h5", clips)
        _, extract["local"] = best_of(args.repeats, lambda: extract_run(local))
        small["local"] = extract_run(local, SMALL_DATASET_CLIPS)[1]["wall_seconds"]
        started = time.perf_counter()
        connect(configurations()["ray_2_workers"])       # one Ray for the Ray runs below
        report["ray_start_seconds"] = round(time.perf_counter() - started, 2)
        for name, settings in configurations().items():
            if name != "local":
                _, sample[name] = best_of(args.repeats, lambda settings=settings: sample_run(settings))
                _, extract[name] = best_of(args.repeats, lambda settings=settings: extract_run(settings))
            print(f"{name:14s} sample {sample[name]}\n{'':14s} extract {extract[name]}", flush=True)
        import ray
        ray.shutdown()
        # A small dataset on a fresh Ray, started and stopped by the run as with compute.address: null.
        started = time.perf_counter()
        extract_run(configurations()["ray_2_workers"], SMALL_DATASET_CLIPS)
        small["ray_2_workers"] = round(time.perf_counter() - started, 2)
    report.update(sample_source_frames_per_second=sample, extract_frames_per_second=extract,
                  small_dataset={"clips": SMALL_DATASET_CLIPS, "frames": int(sum(len(c) for c in
                                                                                 clips[:SMALL_DATASET_CLIPS])),
                                 "extract_wall_seconds": small,
                                 "ray_overhead_seconds": round(small["ray_2_workers"] - small["local"], 2)})
    write_json(OUTPUT, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    # The importable module's main: what it sends to Ray workers must pickle as stages.*, not __main__.
    from stages.tools.benchmark_scaling import main as importable_main
    importable_main()
