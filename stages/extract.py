"""Stage `extract`: run MobileNetV2 once per sampled frame and cache the embeddings in HDF5.

Usage:
    python -m stages.extract                 # reads params.yaml: backbone, extract
    python -m stages.extract --shard 0/4     # fill the cache for a quarter of the clips only

Writes `paths.embeddings` (HDF5): `embeddings` (total frames, 1280) float32,
one row per sampled frame in the same order as the frames file, the same
`offsets` (clip i is rows offsets[i]:offsets[i+1]), per-clip `paths`,
`labels`, `splits`, `signers`, and attributes naming the backbone, the weights
source, the image size, the preprocessing and the sampling rate.

Every clip's embeddings are first saved to `paths.embedding_cache`, keyed by a
hash of the clip's frames and of the backbone that embedded them, each file
written atomically. So a killed run (even SIGKILL) resumes where it stopped,
adding clips to a dataset embeds only the new ones, and shards run on several
machines fill caches that, copied together, assemble into the same file one
run gives. Memory stays flat: one clip's frames at a time (plus a few read
ahead). The converted TFLite encoder is cached too, machine-wide, by backbone
weights, image size and converter version (`frame_encoder_tflite_path`), so
the assemble stage serves the very file that computed the embeddings.

A failure while reading the frames (a corrupt HDF5 chunk) stops the stage
with the clip's path in the message, never a hang.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm import tqdm

from stages.lib.backbone import BACKBONE_NAME, EMBEDDING_SIZE, PREPROCESSING, build_frame_encoder
from stages.lib.engines import frame_encoder_tflite_path, make_frame_engine
from stages.lib.params import load_params
from stages.lib.storage import (atomic_path, clip_slice, read_attributes, read_clip_table, read_offsets,
                                write_clip_columns)

PREFETCH_CLIPS = 4  # clips read from HDF5 ahead of the backbone, so reading overlaps compute
READER_TIMEOUT_SECONDS = 600  # one clip read never takes this long; past it, the reader is stuck


class FramesUnreadable(RuntimeError):
    """The frames file could not be read at a clip; the message names the clip."""


def parse_shard(text: str | None) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N; None -> (0, 1), the whole dataset."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise SystemExit(f"--shard {text}: K must be in 0..N-1")
    return index, count


def backbone_signature(weights_source: str, image_size: int, engine: str) -> dict:
    """What determines an embedding besides the frames: part of every cache key and the file's attributes.

    The engine is included because TFLite and Keras agree only to ~1e-5, and a
    file must hold embeddings from one engine only. The weights source names a
    weights file's content, not just its path (stages/lib/backbone.py).
    """
    return {"backbone": BACKBONE_NAME, "weights_source": weights_source, "image_size": image_size,
            "preprocessing": PREPROCESSING, "embedding_size": EMBEDDING_SIZE, "engine": engine}


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
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    with partial.open("wb") as handle:
        np.save(handle, array)
    os.replace(partial, path)


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
class CacheFill:
    embedded: int                  # clips embedded in this run
    reused: int                    # clips whose embeddings were already cached
    keys: dict[int, str]           # clip index -> content key of its cache file


def fill_cache(frames_path: Path, indices: list[int], engine, cache_dir: Path, digest: str) -> CacheFill:
    """Embed every listed clip whose result is not cached yet."""
    fill = CacheFill(0, 0, {})
    progress = tqdm(iterate_clip_frames(frames_path, indices), total=len(indices), desc="extract", unit="clip")
    for index, frames, key in progress:
        fill.keys[index] = key
        target = clip_cache_path(cache_dir, digest, key)
        if is_complete(target, npy_size((len(frames), EMBEDDING_SIZE))):
            fill.reused += 1
            continue
        save_atomically(target, engine.embed(frames))   # (clip frames, 1280) float32
        fill.embedded += 1
        progress.set_postfix(new=fill.embedded, cached=fill.reused, refresh=False)
    return fill


def assemble_embeddings(frames_path: Path, output_path: Path, cache_dir: Path, digest: str,
                        keys: dict[int, str], attributes: dict) -> None:
    """Gather every clip's cached embeddings into one flat HDF5 file, written atomically."""
    table = read_clip_table(frames_path)
    offsets = read_offsets(frames_path)
    with atomic_path(output_path) as tmp:
        with h5py.File(tmp, "w") as handle:
            embeddings = handle.create_dataset("embeddings", shape=(int(offsets[-1]), EMBEDDING_SIZE),
                                               dtype="float32", chunks=(64, EMBEDDING_SIZE), track_times=False)
            for index in range(len(offsets) - 1):
                embeddings[clip_slice(offsets, index)] = np.load(clip_cache_path(cache_dir, digest, keys[index]))
            handle.create_dataset("offsets", data=offsets, track_times=False)
            write_clip_columns(handle, table)
            handle.attrs.update(attributes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", help="K/N: only fill the cache for clips with index %% N == K")
    args = parser.parse_args(argv)
    shard_index, shard_count = parse_shard(args.shard)

    params = load_params()
    frames_path = Path(params["paths"]["frames"])
    frame_attributes = read_attributes(frames_path)
    image_size = int(frame_attributes["image_size"])
    encoder, weights_source = build_frame_encoder(image_size, params["backbone"]["weights"])
    signature = backbone_signature(weights_source, image_size, params["extract"]["engine"])
    digest = signature_digest(signature)
    cache_dir = Path(params["paths"]["embedding_cache"])

    clip_count = len(read_offsets(frames_path)) - 1
    indices = [index for index in range(clip_count) if index % shard_count == shard_index]
    engine = make_frame_engine(encoder, params["extract"]["engine"], params["extract"]["batch_size"],
                               tflite_cache=frame_encoder_tflite_path(weights_source, image_size))
    try:
        fill = fill_cache(frames_path, indices, engine, cache_dir, digest)
        print(f"embedded {fill.embedded} clips, reused {fill.reused} from the cache ({engine.name})")
        if shard_count > 1:
            print(f"shard {shard_index}/{shard_count} done; run without --shard to assemble")
            return
        attributes = {**signature, **{key: frame_attributes[key] for key in
                                      ("sample_fps", "sampling", "color_order", "data_source")},
                      "frame_preprocessing": frame_attributes["preprocessing"], "engine_name": engine.name,
                      "layout": "(frame, embedding); clip i is rows offsets[i]:offsets[i+1]"}
        assemble_embeddings(frames_path, Path(params["paths"]["embeddings"]), cache_dir, digest, fill.keys,
                            attributes)
    except FramesUnreadable as error:
        raise SystemExit(f"extract: {error}") from None
    print(f"wrote {params['paths']['embeddings']}: {clip_count} clips")


if __name__ == "__main__":
    main()
