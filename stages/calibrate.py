"""Stage `calibrate`: the spotting threshold this model's own validation clips reach.

Usage:
    python -m stages.calibrate          # reads params.yaml: spotting

`spotting.threshold` (0.9) was chosen on the built-in validation streams, for the
default model. A model trained on a few dozen clips of your own signs is less sure
of a sign made by a person or in a take it has not seen: it may rank the sign first
at 0.6-0.8 and never reach 0.9, and then the Live page stays silent. So each model
gets the threshold its own validation clips reach, no higher than params.yaml's.

Each validation clip is played through the live path as a short stream: held still
for a window before and after (its first and last frames repeated, a person at
rest), its embeddings (the cached ones; a fine-tuned model's encoder embeds its
frames again) through the ring buffer and the served TFLite head
(stages/lib/streaming.py), and the steps through the SignSpotter with the
`spotting` params at each candidate threshold, from `threshold` down to
`lowest_threshold` in steps of 0.05. A sign clip is spotted right when the spotter
emits its sign and nothing else; an idle clip (the no-sign class) is spotted wrongly
when it emits anything.

With `spotting.motion_floor_quantile` q > 0, the model also gets a motion floor: the q-quantile
of the validation sign clips' most moving window (`stages.lib.streaming.window_motion`), so that
a window which moved less than nearly every real sign names none (a person waiting in front of
the camera). It is set before the thresholds are scored, and they are scored with it.

The threshold kept is the candidate at which the most validation sign clips are
spotted right, less the share of idle clips with a false sign; the highest among
ties. It never rises above params.yaml's, so calibration only keeps an unsure model
from going silent; the default model keeps 0.9 (docs/recognition.md, "Spotting threshold per
model"). `spotting.calibrate: false` gives every model params.yaml's threshold.

Streams. Every validation stream (generate's continuous streams with their truth)
goes through the live path once (its taken frames kept by the library for evaluate
and later experiments), and a grid of spotting settings (threshold, minimum hold,
smoothing, release) is scored on them, best first, into `paths.spotting_validation`:
the table the `spotting` defaults in params.yaml were chosen from. Tuning lives here;
evaluate only measures.

Writes `paths.spotting_calibration` beside the served model (`<name>.spotting.json`:
the settings and the table they were chosen from), which the Live page, the CLI and
evaluate read through `stages.lib.streaming.model_spotting`,
`paths.spotting_calibration_table`, the same table as CSV (a `dvc plots` plot), and
`paths.spotting_validation`, the grid on the validation streams.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib.embeddings import load_split, served_clip_embeddings, served_uses_the_cached_embeddings
from stages.lib.params import load_params
from stages.lib.served import ServedBundle, load_bundle, spotting_path_for
from stages.lib.storage import atomic_path, read_attributes, write_json
from stages.lib.stream_scoring import RecordedStream, record_streams, stream_metrics, streams_of
from stages.lib.streaming import SpottingSettings, TakenFrames, replay_stream_steps, spot_signs

THRESHOLD_STEP = 0.05
# The spotting settings tried on validation streams (the table the defaults come from).
SWEEP_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SWEEP_MIN_HOLD_SECONDS = (0.1, 0.2, 0.3, 0.5)
SWEEP_SMOOTHING_STEPS = (1, 3, 5)
SWEEP_RELEASE_SECONDS = (0.3, 0.6, 1.0)
# The sweep's ranking counts every wrong sign alike: a minute of signing at the demo holds about ten
# signs (the built-in streams, faster: 4-6 in 16-24 s), so a sign error rate of e costs about 10e
# wrong signs a minute, and f false signs a minute of idling cost f: rank by e + f / 10.
FALSE_SIGNS_PER_MINUTE_WEIGHT = 0.1


@dataclass(frozen=True)
class ClipSteps:
    """One validation clip played as a stream: its class and the live path's steps."""
    label: str
    times: np.ndarray            # (steps,) stream seconds
    probabilities: np.ndarray    # (steps, classes)
    motions: np.ndarray          # (steps,) each step's window motion


def candidate_thresholds(ceiling: float, lowest: float) -> list[float]:
    """params.yaml's threshold first, then down in steps of 0.05 to `lowest`.

    >>> candidate_thresholds(0.9, 0.75)
    [0.9, 0.85, 0.8, 0.75]
    """
    count = int(np.floor((ceiling - lowest) / THRESHOLD_STEP + 1e-9)) if ceiling > lowest else 0
    return [round(ceiling - step * THRESHOLD_STEP, 4) for step in range(count + 1)]


def held_still(clip: np.ndarray, frames: int) -> np.ndarray:
    """(length, features) -> (frames + length + frames, features): the first and last frames repeated, a
    person at rest before and after the sign (as windows.py pads a short clip: never zeros)."""
    return np.concatenate([np.repeat(clip[:1], frames, axis=0), clip, np.repeat(clip[-1:], frames, axis=0)])


def clip_steps(bundle: ServedBundle, label: str, embeddings: np.ndarray) -> ClipSteps:
    """A clip's (frames, features) embeddings, held still a window either side, through the ring buffer and head."""
    padded = held_still(embeddings, bundle.seq_len).astype(np.float32)
    times = np.arange(len(padded)) / bundle.sample_fps
    taken = TakenFrames(times, np.ones(len(padded), np.int64), padded)
    return ClipSteps(label, *replay_stream_steps(bundle, taken, hold_end=False))   # held above already


def validation_clip_steps(bundle: ServedBundle, paths: dict) -> list[ClipSteps]:
    """Every validation clip of the model's classes as the served model sees it, through the live path."""
    split = load_split(paths["embeddings"], "val", bundle.labels)
    reuse = served_uses_the_cached_embeddings(bundle, read_attributes(paths["embeddings"]))
    print(f"validation clips: {len(split)} through the live path's ring buffer and head, "
          + ("on their cached embeddings" if reuse else "their frames embedded again by the served frame encoder"))
    return [clip_steps(bundle, bundle.labels[label], embeddings) for label, embeddings in
            zip(split.labels, served_clip_embeddings(bundle, split, paths["frames"], reuse))]


def spotted_signs(bundle: ServedBundle, clip: ClipSteps, settings: SpottingSettings) -> list[str]:
    return [sign.sign for sign in spot_signs(clip.times, clip.probabilities, bundle.labels, bundle.no_sign_label,
                                             settings, bundle.window_seconds, clip.motions)]


def score_threshold(bundle: ServedBundle, clips: list[ClipSteps], settings: SpottingSettings) -> dict:
    """One row of the table: how the validation clips fare at `settings.threshold`."""
    sign_clips = [clip for clip in clips if clip.label != bundle.no_sign_label]
    idle_clips = [clip for clip in clips if clip.label == bundle.no_sign_label]
    right = [spotted_signs(bundle, clip, settings) == [clip.label] for clip in sign_clips]
    false = [bool(spotted_signs(bundle, clip, settings)) for clip in idle_clips]
    return {"threshold": settings.threshold,
            "sign_clips_spotted_right": round(float(np.mean(right)), 4) if right else 0.0,
            "idle_clips_with_a_false_sign": round(float(np.mean(false)), 4) if false else 0.0}


def choose_threshold(table: pd.DataFrame, enabled: bool) -> tuple[float, str]:
    """The kept threshold and why, from the table (params.yaml's threshold in its first row; rule above)."""
    ceiling = float(table["threshold"].iloc[0])
    if not enabled:
        return ceiling, "calibration off (spotting.calibrate false): params.yaml's threshold"
    balance = (table["sign_clips_spotted_right"] - table["idle_clips_with_a_false_sign"]).to_numpy()
    row = table.iloc[int(np.argmax(balance))]                  # the first of the best: the highest threshold
    spotted, false = row["sign_clips_spotted_right"], row["idle_clips_with_a_false_sign"]
    if float(row["threshold"]) == ceiling:
        return ceiling, (f"params.yaml's threshold: no lower one does better on them "
                         f"({spotted:.0%} spotted right, {false:.0%} of idle clips with a false sign)")
    return float(row["threshold"]), (
        f"{spotted:.0%} spotted right and {false:.0%} of idle clips with a false sign, where params.yaml's "
        f"{ceiling:g} spots {table['sign_clips_spotted_right'].iloc[0]:.0%} right "
        f"({table['idle_clips_with_a_false_sign'].iloc[0]:.0%} false)")


def motion_floor(bundle: ServedBundle, clips: list[ClipSteps], quantile: float) -> float:
    """The motion floor (`SpottingSettings.motion_floor`) that `quantile` of the validation sign clips stay
    under at their most moving window: 0.1 lets 90 % of them move past it. 0 with no quantile or no sign clip."""
    peaks = [float(clip.motions.max()) for clip in clips if clip.label != bundle.no_sign_label and len(clip.motions)]
    return round(float(np.quantile(peaks, quantile)), 6) if quantile > 0 and peaks else 0.0


def calibrate(bundle: ServedBundle, clips: list[ClipSteps], spotting: dict) -> tuple[dict, pd.DataFrame]:
    """The record written beside the model ({"settings", "calibration"}) and its table."""
    quantile = float(spotting.get("motion_floor_quantile") or 0.0)
    settings = replace(SpottingSettings.from_params(spotting), motion_floor=motion_floor(bundle, clips, quantile))
    thresholds = candidate_thresholds(settings.threshold, float(spotting["lowest_threshold"]))
    table = pd.DataFrame([score_threshold(bundle, clips, replace(settings, threshold=threshold))
                          for threshold in thresholds])
    sign_clips = sum(clip.label != bundle.no_sign_label for clip in clips)
    if sign_clips == 0:
        threshold, reason = settings.threshold, "no validation sign clip: params.yaml's threshold"
    else:
        threshold, reason = choose_threshold(table, bool(spotting["calibrate"]))
    record = {"settings": asdict(replace(settings, threshold=threshold)),
              "calibration": {"threshold_in_params": settings.threshold, "reason": reason,
                              "calibrate": bool(spotting["calibrate"]),
                              "motion_floor_quantile": quantile,
                              "validation_sign_clips": int(sign_clips),
                              "validation_idle_clips": int(len(clips) - sign_clips),
                              "table": table.to_dict(orient="records")}}
    return record, table


def spotting_sweep(bundle: ServedBundle, streams: list[RecordedStream], floor: float = 0.0) -> pd.DataFrame:
    """Stream figures on validation streams for every setting of the grid (with the model's motion `floor`),
    best first."""
    rows = []
    for threshold, hold, smoothing, release in itertools.product(
            SWEEP_THRESHOLDS, SWEEP_MIN_HOLD_SECONDS, SWEEP_SMOOTHING_STEPS, SWEEP_RELEASE_SECONDS):
        settings = SpottingSettings(threshold, hold, smoothing, release, floor)
        figures = stream_metrics(bundle, streams, settings, prefix="")
        rows.append({"threshold": threshold, "min_hold_seconds": hold, "smoothing_steps": smoothing,
                     "release_seconds": release, **{key: figures[key] for key in (
                         "sign_error_rate", "false_signs_per_minute", "latency_seconds_median",
                         "latency_seconds_p95")}})
    table = pd.DataFrame(rows)
    table["rank_score"] = (table["sign_error_rate"].fillna(1.0)
                           + FALSE_SIGNS_PER_MINUTE_WEIGHT * table["false_signs_per_minute"].fillna(0.0))
    return table.sort_values(["rank_score", "latency_seconds_median"], kind="stable").reset_index(drop=True)


def quantile_text(spotting: dict) -> str:
    return (f"{float(spotting['motion_floor_quantile']):.0%} of the validation sign clips never move this much "
            "(spotting.motion_floor_quantile)")


def main() -> None:
    params = load_params()
    paths = params["paths"]
    if Path(paths["spotting_calibration"]) != spotting_path_for(paths["model"]):
        raise SystemExit(f"paths.spotting_calibration must sit beside the model as "
                         f"{spotting_path_for(paths['model'])}: that is where the Live page and the CLI look")
    bundle = load_bundle(paths["model"])
    clips = validation_clip_steps(bundle, paths)
    record, table = calibrate(bundle, clips, params["spotting"])
    write_json(paths["spotting_calibration"], record)
    with atomic_path(paths["spotting_calibration_table"]) as tmp:
        table.to_csv(tmp, index=False)
    # The usual and idle validation streams; the fast ones are measured by evaluate (fast_stream_*), not swept here.
    val_streams = streams_of(record_streams(bundle, Path(paths["streams"]), ("val",), Path(paths["embedding_cache"])),
                             "val")
    sweep = spotting_sweep(bundle, val_streams, record["settings"]["motion_floor"]) if val_streams else pd.DataFrame()
    with atomic_path(paths["spotting_validation"]) as tmp:
        sweep.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    print(f"spotting threshold {record['settings']['threshold']:g}: {record['calibration']['reason']} "
          f"({record['calibration']['validation_sign_clips']} sign and "
          f"{record['calibration']['validation_idle_clips']} idle validation clips)")
    if record["settings"]["motion_floor"]:
        print(f"motion floor {record['settings']['motion_floor']:.4g}: {quantile_text(params['spotting'])}")


if __name__ == "__main__":
    main()
