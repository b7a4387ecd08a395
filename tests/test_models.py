"""The head and the full graph: shapes, dtypes, and that they are the same function."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.backbone import build_frame_encoder
from stages.lib.models import FrameDifferences, build_full_model, build_head, build_head_from_card, load_model


def test_head_maps_embedding_sequences_to_class_probabilities():
    head = build_head(seq_len=5, num_classes=4, lstm_units=8, dropout=0.0)
    probabilities = head(np.random.default_rng(0).normal(size=(3, 5, 1280)).astype("float32")).numpy()
    assert probabilities.shape == (3, 4)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert head.get_layer("probabilities").dtype_policy.compute_dtype == "float32"


def test_head_ignores_what_is_constant_through_a_clip():
    """Temporal centering: a signer's looks (a constant offset on every frame) do not change the output."""
    head = build_head(seq_len=5, num_classes=4, lstm_units=8, dropout=0.0)
    rng = np.random.default_rng(1)
    sequence = rng.normal(size=(2, 5, 1280)).astype("float32")
    looks = rng.normal(size=(2, 1, 1280)).astype("float32") * 3
    assert np.allclose(head(sequence).numpy(), head(sequence + looks).numpy(), atol=1e-5)
    # ... while reversing time does change it (the head is order-aware).
    assert not np.allclose(head(sequence).numpy(), head(sequence[:, ::-1]).numpy(), atol=1e-4)


def test_head_survives_a_save_and_load_round_trip(tmp_path):
    head = build_head(seq_len=4, num_classes=3, lstm_units=8, dropout=0.0)
    x = np.random.default_rng(2).normal(size=(2, 4, 1280)).astype("float32")
    head.save(tmp_path / "head.keras")
    loaded = load_model(tmp_path / "head.keras")
    assert np.allclose(head(x).numpy(), loaded(x).numpy(), atol=1e-6)


def test_a_projected_head_maps_each_step_to_fewer_numbers_and_the_card_rebuilds_it():
    """train.projection_units: a linear map per step before the BiLSTM, which the card's architecture names."""
    plain = build_head(seq_len=4, num_classes=3, lstm_units=8, dropout=0.0)
    projected = build_head(seq_len=4, num_classes=3, lstm_units=8, dropout=0.0, projection_units=16)
    assert projected.get_layer("projection").output.shape == (None, 4, 16)
    assert projected.count_params() < plain.count_params()
    card = {"seq_len": 4, "labels": ["a", "b", "_none"], "feature_size": 1280, "centre_in_time": True,
            "train_params": {"lstm_units": 8, "dropout": 0.0, "projection_units": 16}}
    rebuilt = build_head_from_card(card)
    rebuilt.set_weights(projected.get_weights())                 # the same layers, in the same order
    x = np.random.default_rng(4).normal(size=(2, 4, 1280)).astype("float32")
    assert np.allclose(rebuilt(x).numpy(), projected(x).numpy(), atol=1e-6)
    # A card from before the key existed means no projection.
    del card["train_params"]["projection_units"]
    assert [layer.name for layer in build_head_from_card(card).layers] == [layer.name for layer in plain.layers]


def test_motion_channels_give_each_step_its_change_and_survive_saving_and_the_card(tmp_path):
    """train.motion_channels: the head sees each step beside its change since the step before."""
    x = np.random.default_rng(5).normal(size=(2, 4, 6)).astype("float32")
    both = FrameDifferences()(x).numpy()                                           # (2, 4, 12)
    np.testing.assert_allclose(both[..., :6], x)
    np.testing.assert_allclose(both[:, 0, 6:], 0.0)
    np.testing.assert_allclose(both[:, 1:, 6:], x[:, 1:] - x[:, :-1], atol=1e-6)
    head = build_head(seq_len=4, num_classes=3, lstm_units=8, dropout=0.0, feature_size=6, motion_channels=True)
    assert head.get_layer("frame_differences").output.shape == (None, 4, 12)
    head.save(tmp_path / "head.keras")
    np.testing.assert_allclose(load_model(tmp_path / "head.keras")(x).numpy(), head(x).numpy(), atol=1e-6)
    card = {"seq_len": 4, "labels": ["a", "b", "_none"], "feature_size": 6, "centre_in_time": True,
            "train_params": {"lstm_units": 8, "dropout": 0.0, "projection_units": 0, "motion_channels": True}}
    rebuilt = build_head_from_card(card)
    rebuilt.set_weights(head.get_weights())
    np.testing.assert_allclose(rebuilt(x).numpy(), head(x).numpy(), atol=1e-6)


def test_full_graph_is_the_encoder_per_frame_followed_by_the_head():
    encoder, _ = build_frame_encoder(image_size=32, weights="random")
    head = build_head(seq_len=3, num_classes=2, lstm_units=4, dropout=0.0)
    model = build_full_model(encoder, head, seq_len=3)
    frames = np.random.default_rng(3).integers(0, 256, size=(2, 3, 32, 32, 3), dtype=np.uint8)
    embeddings = encoder(frames.reshape(6, 32, 32, 3)).numpy().reshape(2, 3, 1280)
    assert np.allclose(model(frames).numpy(), head(embeddings).numpy(), atol=1e-5)


def test_label_smoothing_targets_the_smoothed_distribution_and_the_head_saves_with_it(tmp_path):
    import keras

    from stages.lib.models import SmoothedSparseCrossentropy, head_loss
    assert head_loss(0.0) == "sparse_categorical_crossentropy"              # off: Keras's own loss
    loss = head_loss(0.3)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 2])
    targets = np.full((2, 3), 0.1)                                          # 0.3 / 3 each, the true class 0.8
    targets[[0, 1], labels] = 0.8
    expected = -(targets * np.log(probabilities)).sum(axis=1).mean()
    assert float(loss(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    head = build_head(seq_len=4, num_classes=3, lstm_units=4, dropout=0.0, feature_size=5)
    head.compile(optimizer="adam", loss=loss)
    head.fit(np.random.default_rng(0).normal(size=(8, 4, 5)), np.arange(8) % 3, epochs=1, verbose=0)
    head.save(tmp_path / "head.keras")
    loaded = load_model(tmp_path / "head.keras")
    assert isinstance(loaded.loss, SmoothedSparseCrossentropy) and loaded.loss.smoothing == pytest.approx(0.3)
    assert isinstance(loaded, keras.Model)
