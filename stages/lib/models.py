"""The BiLSTM head, and the full CNN+LSTM graph that the app serves.

Usage:
    from stages.lib.models import build_head, build_full_model
    head = build_head(seq_len=20, num_classes=12, lstm_units=128, dropout=0.3)
    probabilities = head(embeddings)                 # (batch, 20, 1280) -> (batch, 12)
    model = build_full_model(frame_encoder, head, seq_len=20)
    probabilities = model(frames)                    # (batch, 20, H, W, 3) uint8 -> (batch, 12)

Training the head on cached embeddings and serving the full graph are the same
function: the full graph is the frame encoder applied to every frame followed
by the very same head. Time is folded into the batch for the encoder,
(batch x seq_len, H, W, 3), rather than wrapped in `TimeDistributed`: the same
numbers (test, 1e-5), but Keras 3 runs `TimeDistributed` through
`vectorized_map`, which traced for 73-110 s in a trainable step here, took
2.4x longer to convert to TFLite and ran 2x slower there (64 px, 8 frames:
33 s vs 14 s to convert, 5.9 ms vs 3.1 ms a window). Fine-tuning trains
this very graph.
"""
from __future__ import annotations

from pathlib import Path

import keras

from stages.lib.backbone import EMBEDDING_SIZE


@keras.saving.register_keras_serializable(package="signlang")
class TemporalCentering(keras.layers.Layer):
    """Subtract each clip's mean embedding over time: (batch, T, D) -> (batch, T, D).

    What stays constant through a clip (the signer's looks, clothes, background)
    is removed, and what changes (the hands) remains. Measured on the built-in
    dataset: held-out-signer test accuracy 0.64 without it, 0.99 with it.
    """

    def call(self, sequence):
        return sequence - keras.ops.mean(sequence, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="signlang")
class FrameDifferences(keras.layers.Layer):
    """Each step's features beside their change since the step before: (batch, T, D) -> (batch, T, 2D).

    Motion as such (`train.motion_channels`): a hand held at a sign's start pose and a hand moving through
    the sign can look alike frame by frame; their differences do not. The first step's change is zero.
    Inside the head, so every path that runs the head (training, evaluate, the live ring buffer) sees it.
    """

    def call(self, sequence):
        change = sequence[:, 1:] - sequence[:, :-1]                                    # (batch, T - 1, D)
        change = keras.ops.concatenate([keras.ops.zeros_like(sequence[:, :1]), change], axis=1)  # (batch, T, D)
        return keras.ops.concatenate([sequence, change], axis=-1)                     # (batch, T, 2D)


@keras.saving.register_keras_serializable(package="signlang")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing (`train.label_smoothing`): the true class's target
    is 1 - s + s / classes, every other's s / classes, so a head trained on a handful of clips a sign is not
    pushed to certainty on them. Keras's sparse loss has no smoothing, its categorical one wants one-hot labels."""

    def __init__(self, smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, labels, probabilities):
        classes = keras.ops.shape(probabilities)[-1]
        targets = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32"), classes)
        return keras.losses.categorical_crossentropy(targets, probabilities, label_smoothing=self.smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "smoothing": self.smoothing}


def head_loss(label_smoothing: float = 0.0) -> str | keras.losses.Loss:
    """The head's training loss: plain sparse cross-entropy, or with `label_smoothing` > 0 the smoothed one."""
    return SmoothedSparseCrossentropy(label_smoothing) if label_smoothing > 0 else "sparse_categorical_crossentropy"


def build_head(seq_len: int, num_classes: int, lstm_units: int, dropout: float,
               feature_size: int = EMBEDDING_SIZE, centre_in_time: bool = True,
               projection_units: int = 0, motion_channels: bool = False) -> keras.Model:
    """(batch, seq_len, 1280) float embeddings -> (batch, num_classes) float32 probabilities.

    `projection_units` > 0 maps each step's features linearly to that many numbers before the BiLSTM
    (`train.projection_units`): the LSTM's input multiplication on 1280 numbers a step is most of a
    training step's arithmetic, and a handful of clips per sign has no use for 1280 free directions.

    `motion_channels` adds each step's change since the step before (FrameDifferences).

    `feature_size` is the width of each step's features: MobileNetV2's 1280, or the keypoints'
    (`backbone.name: keypoints`, stages/lib/keypoints.py), which also turn `centre_in_time` off:
    centring takes the signer and the room out of an ImageNet embedding, but keypoints are already in
    body coordinates, and centring them would take away where the hands are, which is part of the
    sign (measured: docs/real-clips.md).
    """
    embeddings = keras.Input((seq_len, feature_size), name="embeddings")
    motion = TemporalCentering(name="temporal_centering")(embeddings) if centre_in_time \
        else embeddings                                                         # (batch, T, 1280)
    if motion_channels:
        motion = FrameDifferences(name="frame_differences")(motion)             # (batch, T, 2 x 1280)
    dropped = keras.layers.Dropout(dropout, name="input_dropout")(motion)
    steps = keras.layers.Dense(projection_units, name="projection")(dropped) if projection_units \
        else dropped                                                            # (batch, T, P or 1280)
    # Bidirectional: signs that are the same motion in opposite order differ only in time direction.
    sequence = keras.layers.Bidirectional(keras.layers.LSTM(lstm_units), name="bilstm")(steps)  # (batch, 2*units)
    sequence = keras.layers.Dropout(dropout, name="head_dropout")(sequence)
    # float32 softmax even under a mixed precision policy: probabilities must sum to 1 precisely.
    probabilities = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                       name="probabilities")(sequence)
    return keras.Model(embeddings, probabilities, name="bilstm_head")


def build_head_from_card(head_card: dict) -> keras.Model:
    """A head of the architecture `paths.labels` (train's card) describes, with fresh weights: for loading
    weights into (fine-tuning, assembling a fine-tuned bundle). Cards from before a key existed get its
    old meaning."""
    settings = head_card["train_params"]
    return build_head(int(head_card["seq_len"]), len(head_card["labels"]), settings["lstm_units"],
                      settings["dropout"], int(head_card.get("feature_size", EMBEDDING_SIZE)),
                      bool(head_card.get("centre_in_time", True)), int(settings.get("projection_units", 0)),
                      bool(settings.get("motion_channels", False)))


def build_full_model(frame_encoder: keras.Model, head: keras.Model, seq_len: int) -> keras.Model:
    """(batch, seq_len, H, W, 3) uint8 RGB frames -> (batch, num_classes) probabilities."""
    image_size = frame_encoder.input_shape[1]
    frames = keras.Input((seq_len, image_size, image_size, 3), dtype="uint8", name="frames")
    # The Reshape layer restores the static frame shape that ops.reshape's -1 batch leaves unknown.
    flat = keras.layers.Reshape((image_size, image_size, 3), name="frames_as_batch")(
        keras.ops.reshape(frames, (-1, image_size, image_size, 3)))                 # (batch * T, H, W, 3)
    embeddings = keras.ops.reshape(frame_encoder(flat), (-1, seq_len, EMBEDDING_SIZE))  # (batch, T, 1280)
    probabilities = head(embeddings)
    return keras.Model(frames, probabilities, name="sign_recognizer")


def load_model(path: str | Path) -> keras.Model:
    """Load a saved head or full graph; importing this module registers its layers and loss first."""
    return keras.models.load_model(path)
