"""Stage `extract`: run MobileNetV2 once per sampled frame and cache the embeddings in HDF5.

Usage:
    python -m stages.extract                 # reads params.yaml: backbone, extract, compute

With `backbone.name: keypoints` each frame becomes MediaPipe body and hand keypoints instead
(stages/lib/keypoints.py; `embeddings` is then (total frames, 155)), cached the same way.

Writes `paths.embeddings` (HDF5): `embeddings` (total frames, features) float32 (1280 MobileNetV2, 155 keypoints),
one row per sampled frame in the same order as the frames file, the same
`offsets` (clip i is rows offsets[i]:offsets[i+1]), per-clip `paths`,
`labels`, `splits`, `signers`, and attributes naming the backbone, the weights
source, the image size, the preprocessing and the sampling rate.

Every clip's embeddings are first saved to `paths.embedding_cache`, keyed by a
hash of the clip's frames and of the backbone that embedded them, each file
written atomically. So a killed run (even SIGKILL) resumes where it stopped,
and adding clips to a dataset embeds only the new ones. Memory stays flat:
one clip's frames at a time (plus a few read ahead). The converted TFLite
encoder is cached too, machine-wide, by backbone weights, image size and
converter version (`frame_encoder_tflite_path`), so the assemble stage serves
the very file that computed the embeddings.

Where the backbone runs is `compute` (stages/lib/compute.py). This process
always reads and hashes every clip, decides from the cache what is missing,
writes each cache file and assembles the output; only the embedding of the
missing clips is handed out. Locally that is one engine in this process, fed
by the reader thread. On Ray it is an actor pool: each actor builds the
engine once from the flatbuffer this process converted (the same bytes
everywhere), reads its clips' frames from the frames file at the same
absolute path, checks them against this process's hash (a machine with
another copy of the file stops the run instead of poisoning the cache), and
returns the embeddings. Results arrive in clip order, so the output is the
same whichever engine made it.

A failure while reading the frames (a corrupt HDF5 chunk) stops the stage
with the clip's path in the message, never a hang.
"""
from __future__ import annotations

import hashlib
import io
import json
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from stages.lib.backbone import (
    BACKBONE_NAME,
    EMBEDDING_SIZE,
    PREPROCESSING,
    build_frame_encoder,
    check_recorded_weights,
)
from stages.lib.compute import ComputeSettings, WorkerError, map_on_workers, worker_cpu_count
from stages.lib.engines import FrameEngineRecipe, frame_encoder_tflite_path
from stages.lib.keypoints import KEYPOINT_FEATURES, KEYPOINT_PREPROCESSING, KEYPOINT_SOURCE
from stages.lib.params import KEYPOINTS_BACKBONE, load_params
from stages.lib.storage import (
    atomic_path,
    clip_slice,
    read_attributes,
    read_clip_table,
    read_offsets,
    write_clip_columns,
)

PREFETCH_CLIPS = 4  # clips read from HDF5 ahead of the backbone, so reading overlaps compute
READER_TIMEOUT_SECONDS = 600  # one clip read never takes this long; past it, the reader is stuck


class FramesUnreadable(RuntimeError):
    """The frames file could not be read at a clip; the message names the clip."""


def backbone_signature(weights_source: str, image_size: int, engine: str) -> dict:
    """What determines an embedding besides the frames: part of every cache key and the file's attributes.

    The engine is included because TFLite and Keras agree only to ~1e-5, and a
    file must hold embeddings from one engine only. The weights source names a
    weights file's content, not just its path (stages/lib/backbone.py).
    """
    return {"backbone": BACKBONE_NAME, "weights_source": weights_source, "image_size": image_size,
            "preprocessing": PREPROCESSING, "embedding_size": EMBEDDING_SIZE, "engine": engine}


def keypoint_signature(image_size: int) -> dict:
    """The same for `backbone.name: keypoints`: the two pinned MediaPipe models name the source."""
    return {"backbone": KEYPOINTS_BACKBONE, "weights_source": KEYPOINT_SOURCE, "image_size": image_size,
            "preprocessing": KEYPOINT_PREPROCESSING, "embedding_size": KEYPOINT_FEATURES, "engine": "keypoints"}


def frame_engine_plan(params: dict, image_size: int) -> tuple[dict, FrameEngineRecipe]:
    """(signature, recipe) of the per-frame encoder `backbone.name` chooses."""
    if params["backbone"]["name"] == KEYPOINTS_BACKBONE:
        return keypoint_signature(image_size), FrameEngineRecipe.for_keypoints(image_size)
    encoder, weights_source = build_frame_encoder(image_size, params["backbone"]["weights"])
    check_recorded_weights(weights_source, params["paths"]["backbone_weights"])
    engine = params["extract"]["engine"]
    recipe = FrameEngineRecipe.from_encoder(encoder, engine, params["extract"]["batch_size"],
                                            tflite_cache=frame_encoder_tflite_path(weights_source, image_size))
    return backbone_signature(weights_source, image_size, engine), recipe


def signature_digest(signature: dict) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]


def clip_key(frames: np.ndarray) -> str:
    """Content hash of a clip's frames: the cache key (BLAKE2b: fast, and hashlib frees the GIL meanwhile)."""
    return hashlib.blake2b(frames.tobytes(), digest_size=20).hexdigest()


def clip_cache_path(cache_dir: Path, digest: str, key: str) -> Path:
    """Cache file for one clip, named by the hash of its frames (content, not file name)."""
    return cache_dir / digest / key[:2] / f"{key}.npy"


def npy_size(shape: tuple[int, ...]) -> int:
    """Bytes of a complete float32 .npy file of this shape (header included)."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, np.float32))
    return buffer.tell()


def save_atomically(path: Path, array: np.ndarray) -> None:
    """Write to a private partial file, then rename: a killed process never leaves a half file
    under the real name. (No fsync: a process kill keeps written bytes; after a machine crash
    `is_complete` below catches a torn file and the clip is simply embedded again.)"""
    with atomic_path(path, durable=False) as partial, partial.open("wb") as handle:
        np.save(handle, array)


def is_complete(path: Path, expected_bytes: int) -> bool:
    return path.exists() and path.stat().st_size == expected_bytes


def iterate_clip_frames(frames_path: Path, indices: list[int]) -> Iterator[tuple[int, np.ndarray, str]]:
    """Yield (clip index, frames (clip frames, H, W, 3) uint8, content key), read and hashed on a
    background thread so that reading overlaps the backbone's compute.

    THREAD BOUNDARY: the reader thread only reads and hashes. Whatever it raises
    travels through the queue and is raised here, naming the clip, so a corrupt
    chunk ends the stage with a message instead of leaving this loop waiting.
    """
    buffer: queue.Queue = queue.Queue(maxsize=PREFETCH_CLIPS)
    done = object()
    table_paths = read_clip_table(frames_path)["paths"]
    offsets = read_offsets(frames_path)
    stop = threading.Event()

    def put(item) -> None:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def reader() -> None:
        index = None
        try:
            with h5py.File(frames_path, "r") as handle:
                for index in indices:
                    frames = handle["frames"][clip_slice(offsets, index)]
                    put((index, frames, clip_key(frames)))
            put(done)
        except BaseException as error:   # everything, so the consumer never waits for an item that never comes
            where = f"clip {index} ({table_paths[index]})" if index is not None else "opening the file"
            put(FramesUnreadable(f"cannot read the frames of {where} from {frames_path}: "
                                 f"{type(error).__name__}: {error}"))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = buffer.get(timeout=READER_TIMEOUT_SECONDS)
            except queue.Empty:
                raise FramesUnreadable(f"reading {frames_path} stalled for {READER_TIMEOUT_SECONDS} s") from None
            if item is done:
                break
            if isinstance(item, FramesUnreadable):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class ClipJob:
    """One clip to embed. In the process that read it, it carries its frames; pickled for
    another process (a Ray worker) it carries only which rows to read and their hash, so the
    object store holds positions, not frames, and the driver's memory stays flat."""
    index: int                     # clip index in the frames file
    rows: slice                    # its rows of the frames dataset
    key: str                       # content hash of its frames (the cache key)
    frames: np.ndarray | None      # (clip frames, H, W, 3) uint8, while still in the reading process

    def __getstate__(self) -> dict:
        return {**self.__dict__, "frames": None}


@dataclass
class ClipEmbedding:
    index: int
    key: str
    embeddings: np.ndarray         # (clip frames, features) float32


class ClipEmbedder:
    """The frame engine, built once per worker (once here when local, once per Ray actor)."""

    def __init__(self, frames_path: str, recipe: FrameEngineRecipe):
        self.frames_path = frames_path
        self.engine = recipe.build(threads=worker_cpu_count())
        self.handle: h5py.File | None = None      # opened on the first clip that arrives without frames

    def __call__(self, job: ClipJob) -> ClipEmbedding:
        frames = job.frames if job.frames is not None else self.read(job)
        return ClipEmbedding(job.index, job.key, self.engine.embed(frames))   # (clip frames, features)

    def read(self, job: ClipJob) -> np.ndarray:
        """The clip's frames from this machine's view of the frames file, checked against the driver's hash."""
        host = socket.gethostname()
        try:
            if self.handle is None:
                self.handle = h5py.File(self.frames_path, "r")
            frames = self.handle["frames"][job.rows]
        except OSError as error:
            raise WorkerError(f"worker {host} cannot read the frames of clip {job.index} from {self.frames_path}: "
                              f"{error}; every machine needs the frames file at that path (docs/scale-out.md)"
                              ) from None
        if clip_key(frames) != job.key:
            raise WorkerError(f"worker {host} reads other frames for clip {job.index} than the driver from "
                              f"{self.frames_path}: its copy of the file is not the driver's (docs/scale-out.md)")
        return frames


@dataclass
class CacheFill:
    embedded: int                  # clips embedded in this run
    reused: int                    # clips whose embeddings were already cached
    keys: dict[int, str]           # clip index -> content key of its cache file


def fill_cache(frames_path: Path, indices: list[int], recipe: FrameEngineRecipe, cache_dir: Path, digest: str,
               compute: ComputeSettings = ComputeSettings()) -> CacheFill:
    """Embed every listed clip whose result is not cached yet, on the workers `compute` names.

    Only this process touches the cache: it hashes each clip, skips the
    cached ones, and saves each embedding that comes back, as it comes. The
    bar counts clips done, reused or embedded, on any worker.
    """
    fill = CacheFill(0, 0, {})
    offsets = read_offsets(frames_path)
    progress = tqdm(total=len(indices), desc=f"extract [{compute.describe()}]", unit="clip")

    def clips_to_embed() -> Iterator[ClipJob]:
        for index, frames, key in iterate_clip_frames(frames_path, indices):
            fill.keys[index] = key
            if is_complete(clip_cache_path(cache_dir, digest, key), npy_size((len(frames), recipe.feature_size))):
                fill.reused += 1
                progress.update()
                continue
            yield ClipJob(index, clip_slice(offsets, index), key, frames)

    embedder_args = (str(Path(frames_path).absolute()), recipe)
    for result in map_on_workers(ClipEmbedder, embedder_args, clips_to_embed(), compute):
        save_atomically(clip_cache_path(cache_dir, digest, result.key), result.embeddings)
        fill.embedded += 1
        progress.update()
        progress.set_postfix(new=fill.embedded, cached=fill.reused, refresh=False)
    progress.close()
    return fill


def assemble_embeddings(frames_path: Path, output_path: Path, cache_dir: Path, digest: str,
                        keys: dict[int, str], attributes: dict) -> None:
    """Gather every clip's cached embeddings into one flat HDF5 file, written atomically."""
    table = read_clip_table(frames_path)
    offsets = read_offsets(frames_path)
    with atomic_path(output_path) as tmp:
        with h5py.File(tmp, "w") as handle:
            size = int(attributes["embedding_size"])                     # 1280, or the keypoint features
            embeddings = handle.create_dataset("embeddings", shape=(int(offsets[-1]), size),
                                               dtype="float32", chunks=(64, size), track_times=False)
            for index in range(len(offsets) - 1):
                embeddings[clip_slice(offsets, index)] = np.load(clip_cache_path(cache_dir, digest, keys[index]))
            handle.create_dataset("offsets", data=offsets, track_times=False)
            write_clip_columns(handle, table)
            handle.attrs.update(attributes)


def main() -> None:
    params = load_params()
    frames_path = Path(params["paths"]["frames"])
    frame_attributes = read_attributes(frames_path)
    image_size = int(frame_attributes["image_size"])
    signature, recipe = frame_engine_plan(params, image_size)
    digest = signature_digest(signature)
    cache_dir = Path(params["paths"]["embedding_cache"])
    clip_count = len(read_offsets(frames_path)) - 1
    try:
        fill = fill_cache(frames_path, list(range(clip_count)), recipe, cache_dir, digest,
                          ComputeSettings.from_params(params))
        print(f"embedded {fill.embedded} clips, reused {fill.reused} from the cache ({recipe.engine_name})")
        attributes = {**signature, **{key: frame_attributes[key] for key in
                                      ("sample_fps", "sampling", "color_order", "data_source")},
                      "frame_preprocessing": frame_attributes["preprocessing"], "engine_name": recipe.engine_name,
                      "layout": "(frame, embedding); clip i is rows offsets[i]:offsets[i+1]"}
        assemble_embeddings(frames_path, Path(params["paths"]["embeddings"]), cache_dir, digest, fill.keys,
                            attributes)
    except (FramesUnreadable, WorkerError) as error:
        raise SystemExit(f"extract: {error}") from None
    print(f"wrote {params['paths']['embeddings']}: {clip_count} clips")


if __name__ == "__main__":
    # The importable module's main, not this `__main__` copy's: what it hands to Ray workers
    # (jobs, functions, classes) must pickle as stages.extract.*, a name a worker can import.
    from stages.extract import main as importable_main
    importable_main()
