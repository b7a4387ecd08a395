"""Deterministic, stable train/val/test splits.

Usage:
    from stages.lib.splits import assign_split
    split = assign_split(label="wave", signer="s03", split_key="wave/clip1.mp4",
                         given_split="", val_fraction=0.15, test_fraction=0.15, seed=42,
                         mode="signer")

Modes (`data.split`):
- given: a split the dataset fixes (the synthetic index, a WLASL index) is
  kept; a clip the index gives no split falls back to the signer rule;
- signer: the dataset's split is ignored; when the signer is known, the whole
  signer goes to one split, so the test set measures how the model does on
  people it has never seen; a clip with no signer goes by itself, within its
  class (the stratified rule);
- stratified: each clip goes by itself, within its class; signers are ignored
  (clips of one person may then sit in train and test).

Assignment hashes the signer (or the class and clip) with the seed, so it
depends on nothing else: adding clips later never moves an existing clip to
another split. The price: with few signers the fractions are only met on
average (the sample stage warns when a split ends up empty).
"""
from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("given", "signer", "stratified")


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


def assign_split(label: str, signer: str, split_key: str, given_split: str,
                 val_fraction: float, test_fraction: float, seed: int, mode: str = "given") -> str:
    """train | val | test for one clip, by the rules of `mode` in the module docstring."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode {mode!r}; allowed: {', '.join(SPLIT_MODES)}")
    if mode == "given" and given_split:
        if given_split not in SPLITS:
            raise ValueError(f"split {given_split!r} in the dataset index; allowed: {', '.join(SPLITS)}")
        return given_split
    if signer and mode != "stratified":
        return split_for_fraction(unit_hash(str(seed), "signer", signer), val_fraction, test_fraction)
    return split_for_fraction(unit_hash(str(seed), "clip", label, split_key), val_fraction, test_fraction)


def split_mode(data: dict) -> str:
    """`data.split`, except that synthetic data always keeps its index's held-out signers.

    The generator fixes exactly which signers are validation and test; hashing
    ten signers could leave the test split empty.
    """
    return "given" if data["source"] == "synthetic" else data["split"]


def split_key(path: Path, root: Path) -> str:
    """The clip's path relative to the dataset root, NFC-normalised: what the split hashes.

    Relative to the root (not the working folder) and normalised, so the same
    dataset gets the same split on every machine, wherever it is mounted.
    """
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        relative = path.as_posix()
    return unicodedata.normalize("NFC", relative)


def planned_split(label: str, signer: str, path: Path, given_split: str, params: dict) -> str:
    """The split the sample stage gives a found file under `params` (its data, sample and base sections):
    the one rule, for the stage and for the app's Record and Train pages, which show it before a run.
    Raises ValueError for a given split it does not know."""
    base, data, sample = params["base"], params["data"], params["sample"]
    return assign_split(label, signer, split_key(path, Path(data["path"])), given_split, sample["val_fraction"],
                        sample["test_fraction"], base["seed"], mode=split_mode(data))
