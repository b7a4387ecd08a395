"""The sampling rule: how clips become model frames. Plain values, so params validation and cards can use it.

Usage:
    from stages.lib.sampling import Sampling
    sampling = Sampling(fps=8, image_size=224, min_frames=4, max_seconds=60, crop="none")
    Sampling.from_dict(card["sampling"]) == sampling      # the model card carries it

stages/lib/video.py applies it; this module only says what it is.
"""
from __future__ import annotations

from dataclasses import dataclass

CROP_MODES = ("none", "signing_space")


@dataclass(frozen=True)
class Sampling:
    """How clips become model frames; the model card carries it, so every consumer uses one rule."""
    fps: float                 # frames per second of stream time that enter the model
    image_size: int            # side of the square RGB frame
    min_frames: int = 1        # fewer sampled frames than this: refused (sample.min_frames)
    max_seconds: float = 0.0   # a usable part longer than this is refused; 0 = no limit (sample.max_seconds)
    crop: str = "none"         # "signing_space": cut to the signer's upper body, found from the face

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"sampling rate must be above 0 frames/s, got {self.fps}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop {self.crop!r}; allowed values: {', '.join(CROP_MODES)}")

    def as_dict(self) -> dict:
        return {"fps": float(self.fps), "image_size": int(self.image_size), "min_frames": int(self.min_frames),
                "max_seconds": float(self.max_seconds), "crop": self.crop}

    @classmethod
    def from_dict(cls, values: dict) -> Sampling:
        return cls(float(values["fps"]), int(values["image_size"]), int(values.get("min_frames", 1)),
                   float(values.get("max_seconds", 0.0)), str(values.get("crop", "none")))


@dataclass(frozen=True)
class CropBox:
    """A square region of a (reduced) frame in its pixels; it may reach past the frame (padded black there)."""
    left: float
    top: float
    side: float
