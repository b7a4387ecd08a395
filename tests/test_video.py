"""The one preprocessing module: the fixed-rate clock, colour order, letterboxing, bounded decoding, refusals."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.lib import video
from stages.lib.video import (
    ClipRefused,
    Sampling,
    SamplingClock,
    fixed_rate_indices,
    letterbox_to_square,
    prepare_frame,
    sample_video,
)
from tests.conftest import gray_ramp_frames, write_video


def sampling(fps: float = 10, image_size: int = 32, min_frames: int = 1, max_seconds: float = 0.0) -> Sampling:
    return Sampling(fps=fps, image_size=image_size, min_frames=min_frames, max_seconds=max_seconds)


def centre_levels(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) RGB -> (T,) gray level at the centre (inside any letterbox)."""
    size = frames.shape[1]
    return frames[:, size // 2, size // 2, 0].astype(int)


@pytest.mark.parametrize("source_fps,rate,count,expected", [
    (30, 10, 10, [0, 3, 6, 9]),                 # every third frame
    (25, 10, 11, [0, 3, 5, 8, 10]),             # the first frame at or after each tick (0, .1, .2, .3, .4 s)
    (10, 10, 4, [0, 1, 2, 3]),                  # same rate: every frame
    (5, 10, 3, [0, 1, 1, 2, 2]),                # a slow source: each frame covers two ticks
    (0, 10, 3, [0, 1, 2]),                      # rate unknown: one tick per frame
])
def test_fixed_rate_indices_take_one_frame_per_tick(source_fps, rate, count, expected):
    assert fixed_rate_indices(count, source_fps, rate).tolist() == expected


def test_a_second_of_video_is_the_same_number_of_frames_whatever_the_camera():
    for source_fps in (24, 25, 29.97, 30, 50, 60):
        assert len(fixed_rate_indices(int(round(source_fps * 3)), source_fps, rate=10)) in (30, 31), source_fps


def test_the_live_clock_takes_the_same_frames_as_sampling_a_file():
    clock = SamplingClock(rate=10)
    taken = [index for index in range(90) for _ in range(clock.ticks(1000.0 + index / 30))]   # any start time
    assert taken == fixed_rate_indices(90, 30, 10).tolist()


def test_the_clock_fills_a_gap_with_the_next_frame_but_at_most_max_ticks():
    clock = SamplingClock(rate=10, max_ticks=5)
    assert clock.ticks(0.0) == 1
    assert clock.ticks(0.05) == 0
    assert clock.ticks(0.31) == 3            # ticks 0.1, 0.2, 0.3 were all waiting for this frame
    assert clock.ticks(60.0) == 5            # a paused stream: capped
    clock.reset()
    assert clock.ticks(3.0) == 1


def test_sampling_needs_a_positive_rate():
    with pytest.raises(ValueError, match="above 0 frames/s"):
        Sampling(fps=0, image_size=32)


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


def test_sample_video_takes_frames_at_the_fixed_rate(tmp_path):
    path = write_video(tmp_path / "ramp.avi", gray_ramp_frames(10), fps=25)      # 0.4 s
    clip = sample_video(path, sampling(fps=10))
    assert clip.frames.shape == (4, 32, 32, 3)                                  # ticks at 0, .1, .2, .3 s
    expected = 10 + 20 * fixed_rate_indices(10, 25, 10)
    assert np.all(np.abs(centre_levels(clip.frames) - expected) <= 4), (centre_levels(clip.frames), expected)
    assert clip.num_frames == 10 and clip.fps == pytest.approx(25.0)


def test_sample_video_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(ClipRefused, match="empty file"):
        sample_video(path, sampling())


def test_sample_video_refuses_text_with_a_video_extension(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(ClipRefused, match="cannot open as video|no decodable frames"):
        sample_video(path, sampling())


def test_sample_video_refuses_clips_shorter_than_min_frames(tmp_path):
    path = write_video(tmp_path / "short.avi", gray_ramp_frames(6), fps=25)     # 3 frames at 10/s
    with pytest.raises(ClipRefused, match=r"too short: 3 frames at 10 frames/s, need at least 5 \(sample.min_frames\)"):
        sample_video(path, sampling(min_frames=5))


def test_a_clip_longer_than_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.avi", gray_ramp_frames(12), fps=4)      # 3 s
    monkeypatch.setattr(video, "decode_at_fixed_rate", lambda *args: pytest.fail("decoded a clip known too long"))
    with pytest.raises(ClipRefused, match=r"too long: 3.0 s, at most 2 s \(sample.max_seconds\)"):
        sample_video(path, sampling(max_seconds=2))


class CountingCapture:
    """The real cv2.VideoCapture, counting the frames grabbed (to see where decoding stops)."""
    grabbed = 0
    real_capture = cv2.VideoCapture

    def __init__(self, path):
        self.capture = CountingCapture.real_capture(path)

    def grab(self):
        CountingCapture.grabbed += 1
        return self.capture.grab()

    def __getattr__(self, name):
        return getattr(self.capture, name)


def test_decoding_stops_at_the_end_of_a_frame_range(tmp_path, monkeypatch):
    path = write_video(tmp_path / "raw.avi", gray_ramp_frames(12), fps=10)
    monkeypatch.setattr(video.cv2, "VideoCapture", CountingCapture)
    CountingCapture.grabbed = 0
    clip = sample_video(path, sampling(fps=10), frame_range=(2, 5))
    assert np.all(np.abs(centre_levels(clip.frames) - (10 + 20 * np.arange(2, 6))) <= 4)
    assert CountingCapture.grabbed == 6                     # frames 0..5, not the 6 after the range


def test_a_header_without_a_frame_count_still_stops_at_the_limit(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.avi", np.tile(gray_ramp_frames(10), (4, 1, 1, 1)), fps=10)   # 4 s
    monkeypatch.setattr(video, "read_header", lambda path: (0, 10.0))        # a container that lies
    monkeypatch.setattr(video.cv2, "VideoCapture", CountingCapture)
    CountingCapture.grabbed = 0
    with pytest.raises(ClipRefused, match=r"too long: at least 2.1 s, at most 2 s"):
        sample_video(path, sampling(max_seconds=2))
    assert CountingCapture.grabbed <= 22


def write_variable_rate_video(path, times: list[float]) -> None:
    """A variable-frame-rate file made directly with PyAV (FFmpeg): frame i has gray level 20 * i at times[i]."""
    import fractions

    import av
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=1000)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index, seconds in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(seconds * 1000), fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# Bursts and gaps, as a phone or a webcam that drops frames writes them; the average rate is 4.5 frames/s.
VARIABLE_TIMES = [0.0, 0.04, 0.08, 0.5, 0.54, 1.2, 1.24, 1.28, 2.0]


def test_a_variable_rate_clip_is_sampled_at_the_moments_it_was_filmed(tmp_path):
    path = tmp_path / "vfr.mp4"
    write_variable_rate_video(path, VARIABLE_TIMES)
    clip = sample_video(path, sampling(fps=10))
    levels = centre_levels(clip.frames)
    # Tick k (k / 10 s) takes the first frame at or after it: frame 0 at 0 s, frame 3 (0.5 s) for ticks
    # 0.1..0.5, frame 5 (1.2 s) for 0.6..1.2, frame 8 (2.0 s) for 1.3..2.0. Dating frames index / average
    # fps would put frame 3 at 0.67 s and frame 8 at 1.78 s.
    expected = [0] + [3] * 5 + [5] * 7 + [8] * 8
    assert len(levels) == len(expected)
    assert np.all(np.abs(levels - 20 * np.array(expected)) <= 6)


def test_a_video_drives_the_live_path_with_its_own_timestamps(tmp_path):
    path = tmp_path / "vfr.mp4"
    write_variable_rate_video(path, [0.3 + seconds for seconds in VARIABLE_TIMES])   # a container starting late
    times = [seconds for seconds, _ in video.iterate_video_frames(path)]
    assert times == pytest.approx(VARIABLE_TIMES, abs=1e-3)


def test_timed_writing_keeps_each_frame_at_its_time(tmp_path):
    frames = [np.full((48, 64, 3), 20 * index, np.uint8) for index in range(len(VARIABLE_TIMES))]
    video.write_timed_video(frames, VARIABLE_TIMES, tmp_path / "timed.mp4")
    times = [seconds for seconds, _ in video.iterate_video_frames(tmp_path / "timed.mp4")]
    assert times == pytest.approx(VARIABLE_TIMES, abs=1e-3)
    with pytest.raises(ValueError, match="one timestamp per frame"):
        video.write_timed_video(frames, VARIABLE_TIMES[:-1], tmp_path / "bad.mp4")


def test_a_constant_rate_file_keeps_its_index_times(tmp_path):
    path = tmp_path / "constant.mp4"
    write_video(path, gray_ramp_frames(10), fps=25)
    times = [seconds for seconds, _ in video.iterate_video_frames(path)]
    assert times == pytest.approx([index / 25 for index in range(10)], abs=1e-3)
