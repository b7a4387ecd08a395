"""Scoring spotted signs against a stream's ground truth: sign error rate, false signs, latency.

Usage:
    from stages.lib.stream_scoring import score_stream, summarise_streams
    score = score_stream(spotted, truth, duration_seconds)     # one stream
    summary = summarise_streams([score, ...])                  # the figures evaluate reports

A stream's truth is the JSON the generate stage writes beside it (the same
schema `python -m stages.infer --mode signs --json` prints): signs in order,
each with start and end seconds. The sign error rate is the edit distance
(substitutions, insertions, deletions) between the emitted and the true sign
sequences, summed over streams and divided by the number of true signs.
Latency is measured for every true sign that the alignment matches to an
emitted sign of the same name: emission time minus the true sign's end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def summarise_streams(scores: list[StreamScore], prefix: str = "stream_") -> dict:
    """The stream figures: sign error rate on sign streams, false signs per minute on idle ones, latency."""
    sign_streams = [score for score in scores if not score.idle]
    idle_streams = [score for score in scores if score.idle]
    true_signs = sum(score.true_signs for score in sign_streams)
    latencies = [latency for score in sign_streams for latency in score.latencies]
    idle_minutes = sum(score.minutes for score in idle_streams)
    summary = {
        f"{prefix}sign_error_rate": round(sum(s.edits for s in sign_streams) / true_signs, 4) if true_signs else None,
        f"{prefix}false_signs_per_minute": (round(sum(s.emitted for s in idle_streams) / idle_minutes, 3)
                                           if idle_minutes else None),
        f"{prefix}latency_seconds_median": round(float(np.median(latencies)), 3) if latencies else None,
        f"{prefix}latency_seconds_p95": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        f"{prefix}num_sign_streams": len(sign_streams), f"{prefix}num_true_signs": true_signs,
        f"{prefix}idle_minutes": round(idle_minutes, 2),
    }
    return summary
