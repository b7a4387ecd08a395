"""Windows of `seq_len` frames out of a clip: what the model sees, in training, evaluation, clip mode and live.

Usage:
    from stages.lib.windows import WindowJitter, centred_window, random_window
    indices = centred_window(length=37, seq_len=24)            # (24,) frame indices into the clip
    window = clip[indices]                                     # (24, ...) frames or embeddings
    indices = random_window(37, 24, rng, WindowJitter(position=0.2, speed=0.15))

The live ring buffer holds the last `seq_len` frames taken at the fixed rate:
a window that starts at any moment, usually with some rest before or after
the sign. Training therefore draws windows at random positions around each
clip's middle, at slightly random speeds, anew every epoch; evaluation and
clip mode classify the centred window. A window reaching past either end of
a clip repeats the clip's first or last frame there (a person holding still),
never zeros: what a camera shows before and after a sign.

Indices, not copies: callers take `clip[indices]` from frames or embeddings
alike, so every path windows the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowJitter:
    """How far training windows stray from the centred one."""
    position: float = 0.2     # the window's centre moves up to this share of max(clip, window) either way
    speed: float = 0.15       # the window spans (1 +- speed) x seq_len clip frames: signers differ in pace

    def as_dict(self) -> dict:
        return {"position": self.position, "speed": self.speed}


def window_indices(length: int, seq_len: int, centre: float, speed: float = 1.0) -> np.ndarray:
    """(seq_len,) indices of a window centred at `centre` (a clip position), `speed` clip frames per step.

    Positions before the clip's start or after its end repeat the first or last frame.
    Positions round half up, never to the even neighbour (`np.rint`): when
    `length - seq_len` is odd every position ends in .5, and rounding half to
    even would take frames 0, 2, 2, 4, 4, ... (every other frame dropped, its
    neighbour repeated) where a window at the clip's own speed must take
    consecutive frames, as the live ring buffer does.
    """
    if length < 1:
        raise ValueError(f"a clip needs at least one frame, got {length}")
    positions = centre + speed * (np.arange(seq_len) - (seq_len - 1) / 2.0)   # (seq_len,) clip positions
    return np.clip(np.floor(positions + 0.5), 0, length - 1).astype(np.int64)


def centred_window(length: int, seq_len: int) -> np.ndarray:
    """The window on the clip's middle at its own speed; a clip of exactly seq_len frames is itself.

    >>> centred_window(4, 6).tolist()        # short clip: its first and last frames repeat
    [0, 0, 1, 2, 3, 3]
    >>> centred_window(10, 4).tolist()       # long clip: the middle
    [3, 4, 5, 6]
    >>> centred_window(7, 4).tolist()        # an odd difference: still consecutive frames
    [2, 3, 4, 5]
    """
    return window_indices(length, seq_len, (length - 1) / 2.0)


def random_window(length: int, seq_len: int, rng: np.random.Generator, jitter: WindowJitter,
                  anywhere: bool = False) -> np.ndarray:
    """A training window: speed and position drawn from `rng`.

    `anywhere` puts the centre anywhere in the clip, for footage that is the
    same class throughout (idle clips of the no-sign class).
    """
    speed = rng.uniform(1.0 - jitter.speed, 1.0 + jitter.speed)
    if anywhere:
        centre = rng.uniform(0.0, length - 1.0)
    else:
        reach = jitter.position * max(length, seq_len)
        centre = (length - 1) / 2.0 + rng.uniform(-reach, reach)
    return window_indices(length, seq_len, centre, speed)


def spread_windows(length: int, seq_len: int, count: int, reach: float) -> list[np.ndarray]:
    """`count` windows with centres spread evenly over +-`reach` x max(clip, window) around the middle.

    count 1 is the centred window; test-time averaging classifies several and averages.
    """
    if count <= 1:
        return [centred_window(length, seq_len)]
    middle = (length - 1) / 2.0
    span = reach * max(length, seq_len)
    return [window_indices(length, seq_len, middle + offset) for offset in np.linspace(-span, span, count)]
