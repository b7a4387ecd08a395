"""Deterministic, stable train/val/test splits.

Usage:
    from stages.lib.splits import assign_split
    split = assign_split(label="wave", signer="s03", clip_key="wave/clip1.mp4",
                         given_split="", val_fraction=0.15, test_fraction=0.15, seed=42)

Rules, in order:
1. a split the dataset fixes (the synthetic index, a WLASL index) is kept;
2. when the signer is known, the whole signer goes to one split, so the test
   set measures how the model does on people it has never seen;
3. otherwise each clip goes by itself, within its class (stratified).

Assignment hashes the signer (or the clip) with the seed, so it depends on
nothing else: adding clips later never moves an existing clip to another split.
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings (the same on every machine and Python run)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_for_fraction(position: float, val_fraction: float, test_fraction: float) -> str:
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_split(label: str, signer: str, clip_key: str, given_split: str,
                 val_fraction: float, test_fraction: float, seed: int) -> str:
    """train | val | test for one clip, by the rules in the module docstring."""
    if given_split:
        if given_split not in SPLITS:
            raise ValueError(f"split {given_split!r} in the dataset index; allowed: {', '.join(SPLITS)}")
        return given_split
    if signer:
        return split_for_fraction(unit_hash(str(seed), "signer", signer), val_fraction, test_fraction)
    return split_for_fraction(unit_hash(str(seed), "clip", label, clip_key), val_fraction, test_fraction)
