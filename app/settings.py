"""Where the app finds models, reports and clips, and its own settings; all from params.yaml.

Usage:
    from app.settings import load_settings
    settings = load_settings()
    settings.models_dir, settings.path("metrics"), settings.max_upload_mb
    settings.recordings_dir, settings.record_setting("seconds")
    configuration, source = rtc_configuration()

Paths come from params.yaml's `paths:` section (their one home), resolved under
a root folder: the repository by default, or `$SIGNLANG_ROOT` when set (the tests
point it at a temporary folder; a deployment can point it at a mounted volume).
The root's own params.yaml is used when it has one, else the repository's.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.lib.params import ParamsError, load_params

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_ENVIRONMENT_VARIABLE = "SIGNLANG_ROOT"
RTC_ENVIRONMENT_VARIABLE = "SIGNLANG_RTC_CONFIGURATION"
RTC_SECRETS_KEY = "rtc_configuration"
# No STUN/TURN servers: host candidates only, which is all that localhost and a LAN
# need, and it never contacts a third party. Behind NAT, set a TURN server (docs/app.md).
DEFAULT_RTC_CONFIGURATION: dict[str, Any] = {"iceServers": []}

# Defaults for an `app:` or `record:` section missing from an older params.yaml (values as in params.yaml).
DEFAULT_APP_SETTINGS = {"max_upload_mb": 50, "sentence_length": 12, "gallery_clips": 6, "train_from_network": False}
DEFAULT_RECORD_SETTINGS = {"recordings": "data/recordings", "seconds": 2.5, "countdown_seconds": 3,
                           "target_clips": 10, "train_overrides": []}


@dataclass(frozen=True)
class AppSettings:
    root: Path                      # folder the params' relative paths start from
    params: dict                    # the whole validated params.yaml

    def path(self, name: str) -> Path:
        """A path from params.yaml's `paths:` section, under the root (e.g. "metrics")."""
        return self.root / self.params["paths"][name]

    def app_setting(self, name: str) -> Any:
        return {**DEFAULT_APP_SETTINGS, **(self.params.get("app") or {})}[name]

    def record_setting(self, name: str) -> Any:
        return {**DEFAULT_RECORD_SETTINGS, **(self.params.get("record") or {})}[name]

    @property
    def record_params(self) -> dict:
        """The params with a complete `record:` section (what app.recordings reads)."""
        return {**self.params, "record": {**DEFAULT_RECORD_SETTINGS, **(self.params.get("record") or {})}}

    @property
    def recordings_dir(self) -> Path:
        """Where the Record page writes clips (record.recordings), under the root unless absolute."""
        return self.root / self.record_setting("recordings")

    @property
    def models_dir(self) -> Path:
        """The folder searched for served models: the one the pipeline writes its model to."""
        return self.path("model").parent

    @property
    def default_model(self) -> Path:
        return self.path("model")

    def spotting_for(self, bundle):
        """A model's spotting settings (a SpottingSettings): its own, calibrated on its validation clips by the
        calibrate stage and kept beside it, else params.yaml's `spotting:` (stages.lib.streaming.model_spotting)."""
        from stages.lib.streaming import SpottingSettings, model_spotting  # numpy and OpenCV only when needed
        return model_spotting(bundle, SpottingSettings.from_params(self.params["spotting"]))

    @staticmethod
    def spotting_origin(bundle) -> str:
        """Where a model's starting threshold came from, to follow "Spotting threshold 0.9" in a sentence."""
        record = bundle.spotting_record
        if record is None:
            return ": params.yaml's (no calibration beside this model)"
        calibration = record["calibration"]
        return (f", calibrated on its {calibration['validation_sign_clips']} sign and "
                f"{calibration['validation_idle_clips']} idle validation clips: {calibration['reason']}")

    @property
    def max_upload_mb(self) -> int:
        return int(self.app_setting("max_upload_mb"))

    @property
    def top_k(self) -> int:
        return int(self.params.get("evaluate", {}).get("top_k", 3))

    def relative(self, path: Path) -> str:
        """`path` as shown to users: relative to the root when inside it."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def data_root() -> Path:
    return Path(os.environ.get(ROOT_ENVIRONMENT_VARIABLE) or REPO_ROOT).resolve()


def load_settings() -> AppSettings:
    """Read and validate params.yaml (cheap: a small YAML file) for the current root."""
    root = data_root()
    params_file = root / "params.yaml" if (root / "params.yaml").exists() else REPO_ROOT / "params.yaml"
    return AppSettings(root=root, params=read_params_a_run_may_be_writing(params_file))


# A training run's `dvc exp run` rewrites params.yaml in place (DVC opens it "w+": empty, then written):
# a page drawn in between read an empty file, and fell over on a missing section (seen in CI, which then
# lost a click on Cancel). So a read that finds no `paths:` section (near the file's end) or a file cut
# mid-value is tried again, for up to PARAMS_READ_TRIES x PARAMS_READ_PAUSE_SECONDS.
PARAMS_READ_TRIES, PARAMS_READ_PAUSE_SECONDS = 40, 0.05


def read_params_a_run_may_be_writing(params_file: Path) -> dict:
    """load_params, again while the file reads as empty or cut short; the last try's error is raised."""
    for _ in range(PARAMS_READ_TRIES - 1):
        try:
            params = load_params(params_file)
        except (yaml.YAMLError, ParamsError):
            params = {}
        if "paths" in params:
            return params
        time.sleep(PARAMS_READ_PAUSE_SECONDS)
    return load_params(params_file)


def plain(value: Any) -> Any:
    """Streamlit secrets (nested read-only mappings) -> plain dicts and lists, as JSON has them."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def check_rtc_configuration(configuration: Any, source: str) -> dict:
    """An RTCConfiguration must be an object whose `iceServers` is a list; raise ValueError otherwise."""
    if not isinstance(configuration, dict) or not isinstance(configuration.get("iceServers"), list):
        raise ValueError(f"{source} must be a JSON object with an \"iceServers\" list, e.g. "
                         '{"iceServers": [{"urls": ["turn:turn.example.org:3478"], '
                         '"username": "user", "credential": "secret"}]}')
    return configuration


def rtc_configuration(read_secrets: Callable[[], Any] | None = None) -> tuple[dict, str]:
    """(WebRTC configuration, where it came from): environment variable, Streamlit secrets, or default.

    `read_secrets` returns the `[rtc_configuration]` table of .streamlit/secrets.toml
    (None when absent). Raises ValueError naming the source when a value is malformed.
    """
    from_environment = os.environ.get(RTC_ENVIRONMENT_VARIABLE)
    if from_environment:
        source = f"environment variable {RTC_ENVIRONMENT_VARIABLE}"
        try:
            parsed = json.loads(from_environment)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON ({error})") from None
        return check_rtc_configuration(parsed, source), source
    from_secrets = read_secrets() if read_secrets else None
    if from_secrets is not None:
        source = f"Streamlit secrets [{RTC_SECRETS_KEY}]"
        return check_rtc_configuration(plain(from_secrets), source), source
    return dict(DEFAULT_RTC_CONFIGURATION), "default: no ICE servers (localhost and LAN)"
