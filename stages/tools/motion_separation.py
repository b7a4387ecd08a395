"""How well motion tells a false sign from a real one: window motion at every emitted sign of the validation
streams, measured on the features and on the pixels.

Usage:
    python -m stages.tools.motion_separation            # the workspace's served model and validation streams
    python -m stages.tools.motion_separation --split test --json reports/motion_separation.json

For issue 34's motion levers, before any becomes part of the live path. Each usual and idle stream
of the split goes through the live path (its kept frames replayed: run `dvc repro evaluate` first)
and the model's spotter. At the step each sign is emitted, two measures of how much the window
moved:

    features  the live path's own `window_motion`: the mean step-to-step change of the window's
              per-frame features (what `spotting.motion_floor_quantile` gates on)
    pixels    a motion energy from the frames themselves: each taken frame at 32 x 32 grey, the mean
              absolute difference from the frame taken before it, averaged over the window

A sign matched to the truth is a true sign; a sign on an idle stream is a false one. A floor at the
true signs' 5 % (10 %) quantile keeps 95 % (90 %) of them; the share of false signs under it is what
such a floor would remove.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from stages.lib.machine import machine_line
from stages.lib.params import load_params
from stages.lib.served import load_bundle
from stages.lib.stream_scoring import align, read_stream_index, read_truth
from stages.lib.streaming import (
    TakenFrames,
    default_spotting,
    frame_encoder_digest,
    model_spotting,
    replay_stream_steps,
    spot_signs,
    stream_cache_path,
    take_path_code_digest,
)
from stages.lib.video import iterate_video_frames

ENERGY_SIZE = 32            # pixels a side: the motion of hands and arms, not of codec noise
FLOOR_QUANTILES = (0.05, 0.1)


def pixel_energy(path: Path, times: np.ndarray) -> np.ndarray:
    """(taken,) each taken frame's mean absolute grey difference from the frame taken before it (0 for the first)."""
    wanted = {round(float(time), 6) for time in times}
    grey = {}
    for time, frame in iterate_video_frames(path):
        if round(time, 6) in wanted:
            small = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (ENERGY_SIZE, ENERGY_SIZE),
                               interpolation=cv2.INTER_AREA)
            grey[round(time, 6)] = small.astype(np.float32)
    frames = [grey[round(float(time), 6)] for time in times]
    return np.array([0.0] + [float(np.abs(b - a).mean()) for a, b in zip(frames, frames[1:])])


def emitted_sign_motions(bundle, path: Path, taken: TakenFrames, settings
                         ) -> tuple[list, dict[float, tuple[float, float]]]:
    """The spotter's signs over a stream's kept frames (`replay_stream_steps`, the file's end not held, then
    `spot_signs`), and each step's (feature motion, pixel energy over its window)."""
    energy = pixel_energy(path, taken.times)
    times, probabilities, motions = replay_stream_steps(bundle, taken, hold_end=False)
    signs = spot_signs(times, probabilities, bundle.labels, bundle.no_sign_label, settings, bundle.window_seconds,
                       motions)
    last_frames = np.searchsorted(taken.times, times)            # each step's newest frame, an index of taken
    window_energy = [float(np.mean(energy[max(0, last - bundle.seq_len + 2):last + 1])) for last in last_frames]
    return signs, {float(time): (float(motion), energy_of_window)
                   for time, motion, energy_of_window in zip(times, motions, window_energy)}


def separation(true: np.ndarray, false: np.ndarray) -> dict:
    """Medians, and the share of false signs a floor at each quantile of the true signs would remove."""
    return {"true_signs": len(true), "false_signs": len(false),
            "true_median": round(float(np.median(true)), 4) if len(true) else None,
            "false_median": round(float(np.median(false)), 4) if len(false) else None,
            **{f"false_removed_keeping_{round(100 * (1 - q))}pct_of_true": round(float((false < np.quantile(true, q))
                                                                                     .mean()), 3)
               for q in FLOOR_QUANTILES if len(true) and len(false)}}


def measure(split: str) -> dict:
    params = load_params()
    paths = params["paths"]
    bundle = load_bundle(paths["model"])
    settings = model_spotting(bundle, default_spotting())
    index = read_stream_index(Path(paths["streams"]))
    encoder, code = frame_encoder_digest(bundle), take_path_code_digest()
    found = {"true": [], "false": []}                          # each (feature motion, pixel energy)
    for row in index[(index["split"] == split) & (index["kind"] != "fast")].itertuples():
        path = Path(paths["streams"]) / row.path
        kept = stream_cache_path(Path(paths["embedding_cache"]), path, encoder, code, bundle)
        if not kept.exists():
            raise SystemExit(f"{path} has no kept frames for this model: run `dvc repro evaluate` first")
        with np.load(kept) as arrays:
            taken = TakenFrames(arrays["times"], arrays["ticks"], arrays["embeddings"])
        signs, motions = emitted_sign_motions(bundle, path, taken, settings)
        if row.kind == "idle":
            found["false"] += [motions[sign.emitted_at] for sign in signs]
        else:
            _, matches = align([sign.sign for sign in signs], [sign.sign for sign in read_truth(path)])
            found["true"] += [motions[signs[emitted].emitted_at] for emitted, _ in matches]
    true, false = (np.array(found[kind]).reshape(-1, 2) for kind in ("true", "false"))
    return {"split": split, "machine": machine_line(),
            "features": separation(true[:, 0], false[:, 0]), "pixels": separation(true[:, 1], false[:, 1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    arguments = parser.parse_args(argv)
    figures = measure(arguments.split)
    print(json.dumps(figures, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
