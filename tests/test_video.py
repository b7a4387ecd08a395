"""The one preprocessing module: sampling indices, colour order, letterboxing, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from stages.lib.video import (ClipRefused, letterbox_to_square, prepare_frame, sample_indices,
                              sample_video)
from tests.conftest import gray_ramp_frames, write_video


def test_sample_indices_spread_evenly_over_the_clip():
    assert sample_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]


def test_sample_indices_repeat_frames_of_short_clips_in_order():
    indices = sample_indices(3, 7)
    assert indices.tolist() == sorted(indices.tolist())
    assert set(indices.tolist()) == {0, 1, 2}
    assert len(indices) == 7


@pytest.mark.parametrize("num_frames,seq_len", [(1, 1), (5, 20), (20, 20), (301, 30)])
def test_sample_indices_stay_inside_the_clip(num_frames, seq_len):
    indices = sample_indices(num_frames, seq_len)
    assert indices.min() >= 0 and indices.max() <= num_frames - 1


def test_sample_indices_reject_empty_clip():
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        sample_indices(0, 5)


def test_prepare_frame_converts_bgr_to_rgb():
    pure_blue_bgr = np.zeros((40, 40, 3), np.uint8)
    pure_blue_bgr[..., 0] = 255
    rgb = prepare_frame(pure_blue_bgr, image_size=16)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[..., 2].min() == 255 and rgb[..., 0].max() == 0


def test_letterbox_pads_the_short_side_and_keeps_content_centred():
    wide = np.full((20, 40, 3), 200, np.uint8)
    square = letterbox_to_square(wide)
    assert square.shape == (40, 40, 3)
    assert square[:10].max() == 0 and square[30:].max() == 0      # black bars top and bottom
    assert square[10:30].min() == 200                              # content untouched


def test_sample_video_reads_the_evenly_spread_frames(tmp_path):
    path = write_video(tmp_path / "ramp.avi", gray_ramp_frames(10))
    clip = sample_video(path, seq_len=5, image_size=32)
    assert clip.frames.shape == (5, 32, 32, 3)
    brightness = clip.frames.reshape(5, -1).mean(axis=1)
    expected = 10 + 20 * sample_indices(10, 5)
    # The centre of the frame (inside the letterbox) carries the gray level.
    centre = clip.frames[:, 16, 16, 0].astype(int)
    assert np.all(np.abs(centre - expected) <= 4), (centre, expected, brightness)
    assert clip.num_frames == 10 and clip.fps == pytest.approx(25.0)


def test_sample_video_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(ClipRefused, match="empty file"):
        sample_video(path, seq_len=4, image_size=32)


def test_sample_video_refuses_text_with_a_video_extension(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(ClipRefused, match="cannot open as video|no decodable frames"):
        sample_video(path, seq_len=4, image_size=32)


def test_sample_video_refuses_clips_shorter_than_min_frames(tmp_path):
    path = write_video(tmp_path / "short.avi", gray_ramp_frames(3))
    with pytest.raises(ClipRefused, match=r"too short: 3 frames, need at least 5"):
        sample_video(path, seq_len=8, image_size=32, min_frames=5)
