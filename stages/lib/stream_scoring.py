"""Scoring spotted signs against a stream's ground truth: sign error rate, false signs, latency.

Usage:
    from stages.lib.stream_scoring import score_stream, summarise_streams, record_streams, stream_metrics
    score = score_stream(spotted, truth, duration_seconds)     # one stream
    summary = summarise_streams([score, ...])                  # the figures evaluate reports
    streams = record_streams(bundle, Path("data/streams"), ("val",), Path("features/cache"))
    figures = stream_metrics(bundle, streams, settings, prefix="val_stream_")   # calibrate and evaluate

A stream's truth is the JSON the generate stage writes beside it (the same
schema `python -m stages.tools.infer --mode signs --json` prints): signs in order,
each with start and end seconds. The sign error rate is the edit distance
(substitutions, insertions, deletions) between the emitted and the true sign
sequences, summed over streams and divided by the number of true signs.
Latency is measured for every true sign that the alignment matches to an
emitted sign of the same name: emission time minus the true sign's end.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TrueSign:
    sign: str
    start: float
    end: float


@dataclass
class StreamScore:
    true_signs: int
    edits: int                                   # edit distance between emitted and true sequences
    emitted: int
    minutes: float
    idle: bool                                   # an idle-only stream (no true signs)
    latencies: list[float] = field(default_factory=list)   # seconds, per matched sign


def align(emitted: list[str], truth: list[str]) -> tuple[int, list[tuple[int, int]]]:
    """Levenshtein distance and the (emitted index, true index) pairs matched with equal names."""
    rows, columns = len(emitted) + 1, len(truth) + 1
    cost = np.zeros((rows, columns), np.int64)
    cost[:, 0] = np.arange(rows)
    cost[0, :] = np.arange(columns)
    for i in range(1, rows):
        for j in range(1, columns):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1,
                             cost[i - 1, j - 1] + (emitted[i - 1] != truth[j - 1]))
    matches, i, j = [], rows - 1, columns - 1
    while i > 0 and j > 0:
        if emitted[i - 1] == truth[j - 1] and cost[i, j] == cost[i - 1, j - 1]:
            matches.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return int(cost[-1, -1]), matches[::-1]


def score_stream(spotted: list, truth: list[TrueSign], duration_seconds: float, idle: bool) -> StreamScore:
    """`spotted`: SpottedSign-like objects (sign, emitted_at) in emission order."""
    edits, matches = align([sign.sign for sign in spotted], [sign.sign for sign in truth])
    latencies = [spotted[e].emitted_at - truth[t].end for e, t in matches]
    return StreamScore(len(truth), edits, len(spotted), duration_seconds / 60.0, idle, latencies)


def poisson_rate_interval(events: int, minutes: float, confidence: float = 0.95) -> list[float]:
    """The exact (Garwood) interval of a rate a minute from `events` counted over `minutes`: how far the
    true rate may be from the count, which with few idle minutes is far (0 events in 2 minutes: up to 1.8)."""
    from scipy.stats import chi2
    tail = (1 - confidence) / 2
    low = chi2.ppf(tail, 2 * events) / 2 if events else 0.0
    high = chi2.ppf(1 - tail, 2 * events + 2) / 2
    return [round(float(low) / minutes, 3), round(float(high) / minutes, 3)]


def summarise_streams(scores: list[StreamScore], prefix: str = "stream_") -> dict:
    """The stream figures: sign error rate on sign streams, false signs per minute on idle ones, latency."""
    sign_streams = [score for score in scores if not score.idle]
    idle_streams = [score for score in scores if score.idle]
    true_signs = sum(score.true_signs for score in sign_streams)
    latencies = [latency for score in sign_streams for latency in score.latencies]
    idle_minutes = sum(score.minutes for score in idle_streams)
    false_signs = sum(score.emitted for score in idle_streams)
    summary = {
        f"{prefix}sign_error_rate": round(sum(s.edits for s in sign_streams) / true_signs, 4) if true_signs else None,
        f"{prefix}false_signs_per_minute": (round(false_signs / idle_minutes, 3) if idle_minutes else None),
        f"{prefix}false_signs_per_minute_ci95": (poisson_rate_interval(false_signs, idle_minutes)
                                                 if idle_minutes else None),
        f"{prefix}latency_seconds_median": round(float(np.median(latencies)), 3) if latencies else None,
        f"{prefix}latency_seconds_p95": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        f"{prefix}num_sign_streams": len(sign_streams), f"{prefix}num_true_signs": true_signs,
        f"{prefix}idle_minutes": round(idle_minutes, 2),
    }
    return summary


# --- recorded streams: the files generate writes, through the live path --------------------------

@dataclass
class RecordedStream:
    path: Path
    split: str
    kind: str                        # "signs" (with pauses), "fast" (without) or "idle" (stages/generate.py)
    duration: float
    truth: list[TrueSign]
    step_times: np.ndarray           # (steps,) stream seconds of each model step
    step_probabilities: np.ndarray   # (steps, classes)
    step_motions: np.ndarray         # (steps,) each step's window motion (stages/lib/streaming.py window_motion)

    @property
    def idle(self) -> bool:
        return self.kind == "idle"


def read_stream_index(streams_dir: Path) -> pd.DataFrame:
    index_path = Path(streams_dir) / "index.csv"
    if not index_path.exists():
        return pd.DataFrame(columns=["path", "split", "signer", "kind", "duration"])
    return pd.read_csv(index_path, keep_default_na=False)


def read_truth(video_path: Path) -> list[TrueSign]:
    record = json.loads(Path(video_path).with_suffix(".json").read_text())
    return [TrueSign(sign["sign"], float(sign["start"]), float(sign["end"])) for sign in record["signs"]]


def record_streams(bundle, streams_dir: Path, splits: tuple[str, ...], cache_dir: Path) -> list[RecordedStream]:
    """Every stream of the given splits through the live path, once (kept frames replayed where the
    library has them: stages/lib/streaming.py `stream_steps`); the steps kept for spotting."""
    from stages.lib.streaming import STREAM_CACHE_FOLDER, frame_encoder_digest, stream_steps, take_path_code_digest
    recorded, replayed = [], 0
    index = read_stream_index(streams_dir)
    encoder_digest, code_digest = frame_encoder_digest(bundle), take_path_code_digest()   # shared by every key
    for row in index[index["split"].isin(splits)].itertuples():
        path = Path(streams_dir) / row.path
        steps, from_cache = stream_steps(bundle, path, cache_dir, encoder_digest, code_digest)
        replayed += from_cache
        recorded.append(RecordedStream(path, row.split, row.kind, float(row.duration), read_truth(path), *steps))
    print(f"streams ({', '.join(splits)}): {len(recorded)} through the live path, {replayed} of them replayed "
          f"from the embeddings kept in {Path(cache_dir) / STREAM_CACHE_FOLDER}")
    return recorded


def streams_of(streams: list[RecordedStream], split: str, fast: bool = False) -> list[RecordedStream]:
    """A split's streams signed without pauses (`fast`), or its usual and idle ones: each figure keeps one
    meaning, so the two are never pooled."""
    return [stream for stream in streams if stream.split == split and (stream.kind == "fast") == fast]


def spot_recorded(bundle, stream: RecordedStream, settings) -> list:
    """The signs the spotter emits over a recorded stream's steps, with `settings` (a SpottingSettings)."""
    from stages.lib.streaming import spot_signs
    return spot_signs(stream.step_times, stream.step_probabilities, bundle.labels, bundle.no_sign_label,
                      settings, bundle.window_seconds, stream.step_motions)


def stream_metrics(bundle, streams: list[RecordedStream], settings, prefix: str) -> dict:
    """Sign error rate, false signs a minute and latency over `streams`, keys prefixed with `prefix`."""
    scores = [score_stream(spot_recorded(bundle, stream, settings), stream.truth, stream.duration, stream.idle)
              for stream in streams]
    return summarise_streams(scores, prefix) if scores else {}


SIGN_STREAM_FIGURES = ("sign_error_rate", "latency_seconds_median", "latency_seconds_p95", "num_sign_streams",
                       "num_true_signs")


def fast_stream_metrics(bundle, streams: list[RecordedStream], settings, prefix: str) -> dict:
    """The sign-stream figures alone (fast streams hold no idle minutes), keys prefixed with `prefix`."""
    figures = stream_metrics(bundle, streams, settings, prefix)
    return {prefix + name: figures[prefix + name] for name in SIGN_STREAM_FIGURES if prefix + name in figures}
