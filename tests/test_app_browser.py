"""The app in a real browser: headless Chromium's fake webcam plays a continuous stream, the Live page writes its sentence.

Usage:
    python -m pytest -q tests/test_app_browser.py
    SIGNLANG_SCREENSHOTS=1 python -m pytest -q tests/test_app_browser.py   # also reports/figures/live.png
                                                # and results.png for the README

The model is the one `dvc repro` makes with the repository's default params
(the `default_workspace` fixture), served the way a user runs the app. The
fake camera plays a test stream of held-out signers (at least 3 signs, rest
and idle between them) in a loop; the test presses START inside the
streamlit-webrtc iframe (once more if no frame arrives: a connection sometimes
drops while starting) and waits until the page's sentence lists the stream's
true signs in order.

Needs Chromium and its driver (Debian: `apt-get install -y chromium chromium-driver`;
other paths through SIGNLANG_CHROMIUM / SIGNLANG_CHROMEDRIVER). Without them the
test is skipped, except under CI (`CI` set), where that is a failure.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import DVC, REPO_ROOT, read_video, run

CHROMIUM = os.environ.get("SIGNLANG_CHROMIUM", "/usr/lib/chromium/chromium")   # the binary, not the wrapper script
CHROMEDRIVER = os.environ.get("SIGNLANG_CHROMEDRIVER", "/usr/bin/chromedriver")
TAKE_SCREENSHOTS = os.environ.get("SIGNLANG_SCREENSHOTS") == "1"
SCREENSHOT_DIR = REPO_ROOT / "reports" / "figures"
MIN_STREAM_SIGNS = 3

SERVER_START_SECONDS = 90         # streamlit up and answering its health check
PAGE_READY_SECONDS = 90           # the Live page drawn, model loaded, START shown
FIRST_FRAME_SECONDS = 20          # after START; then START is pressed once more
LOOPS_TO_WAIT = 3                 # the stream plays in a loop: the first pass may start mid-way
POLL_SECONDS = 0.5

TOP3_SELECTOR = ".st-key-live_top3"
SENTENCE_SELECTOR = ".st-key-live_sentence"
SENTENCE_PREFIX = "Sentence:"

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"), pytest.mark.real_time]


def require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        message = f"{', '.join(missing)} not found: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def write_y4m(path: Path, frames_bgr: np.ndarray, fps: int) -> Path:
    """A YUV4MPEG2 file (text header, then raw I420 frames) that Chromium's fake camera plays in a loop."""
    height, width = frames_bgr.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames_bgr:
            handle.write(b"FRAME\n")
            handle.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())     # (H * 3/2, W) planar
    return path


def read_frames(video_path: Path) -> tuple[np.ndarray, int]:
    """Every frame of a clip as BGR, and its frame rate: the raw material of the fake camera."""
    frames, fps = read_video(video_path)
    return frames, int(round(fps or 25))


def first_test_stream(root: Path, minimum_signs: int) -> tuple[Path, list[str]]:
    """The first test-split sign stream (by name) with at least `minimum_signs` signs, and its true signs."""
    index = pd.read_csv(root / "data/streams/index.csv")
    for row in index[(index["split"] == "test") & (index["kind"] == "signs")].sort_values("path").itertuples():
        path = root / "data/streams" / row.path
        truth = [sign["sign"] for sign in json.loads(path.with_suffix(".json").read_text())["signs"]]
        if len(truth) >= minimum_signs:
            return path, truth
    pytest.fail(f"no test stream with {minimum_signs} signs under {root / 'data/streams'}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, seconds: float, interval: float = 0.5):
    """The first truthy value of condition() within `seconds`, else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def app_server(tmp_path):
    """Start `streamlit run` for a root folder; yields (url, log path); stops its whole process group."""
    servers = []

    def start(root: Path) -> tuple[str, Path]:
        port = free_port()
        log_path = tmp_path / "streamlit.log"
        environment = {**os.environ, "SIGNLANG_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
        environment.pop("SIGNLANG_RTC_CONFIGURATION", None)          # the default: no ICE servers
        command = [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py",
                   "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
                   "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
        with log_path.open("w") as log:
            # Own process group (session): stopping it later stops streamlit and anything it started.
            server = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        servers.append(server)
        url = f"http://127.0.0.1:{port}"
        if not wait_until(lambda: is_healthy(url) or server.poll() is not None, SERVER_START_SECONDS) \
                or server.poll() is not None:
            pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
        return url, log_path

    yield start
    for server in servers:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=15)


def start_chromium(camera_y4m: Path, profile: Path):
    """Headless Chromium whose fake camera plays `camera_y4m` in a loop (one file per launch)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-video-capture={camera_y4m}",
                     f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def chromium(tmp_path):
    """Start headless Chromium whose fake camera plays a .y4m file; yields a factory, quits at the end."""
    require_browser()
    drivers = []

    def start(camera_y4m: Path):
        driver = start_chromium(camera_y4m, tmp_path / "chromium-profile")
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def top3_text(driver) -> str:
    from selenium.webdriver.common.by import By
    elements = driver.find_elements(By.CSS_SELECTOR, TOP3_SELECTOR)
    try:
        return elements[0].text if elements else ""
    except Exception:  # the element was redrawn between finding and reading it
        return ""


def sentence_signs(driver) -> list[str]:
    """The signs of the page's sentence ("Sentence: a · b · c"), oldest first."""
    from selenium.webdriver.common.by import By
    elements = driver.find_elements(By.CSS_SELECTOR, SENTENCE_SELECTOR)
    try:
        text = elements[0].text.strip() if elements else ""
    except Exception:  # redrawn between finding and reading it
        return []
    if not text.startswith(SENTENCE_PREFIX):
        return []
    return [sign.strip() for sign in text[len(SENTENCE_PREFIX):].split("·") if sign.strip()]


def lists_in_order(sentence: list[str], expected: list[str]) -> bool:
    """Every expected sign appears in the sentence, in this order (other signs may sit between)."""
    position = 0
    for sign in sentence:
        if position < len(expected) and sign == expected[position]:
            position += 1
    return position == len(expected)


def press_webrtc_button(driver, label: str) -> bool:
    """Click START or STOP inside the streamlit-webrtc component's iframe; False when not shown."""
    from selenium.webdriver.common.by import By
    frames = driver.find_elements(By.CSS_SELECTOR, 'iframe[title*="webrtc_streamer"]')
    if not frames:
        return False
    driver.switch_to.frame(frames[0])
    try:
        buttons = [button for button in driver.find_elements(By.TAG_NAME, "button")
                   if button.text.strip().upper() == label]
        if buttons:
            buttons[0].click()
        return bool(buttons)
    finally:
        driver.switch_to.default_content()


def frames_arrived(driver) -> bool:
    """The ring buffer is filling (or full): camera frames reach the recognizer."""
    text = top3_text(driver)
    return "Top 3" in text or ("Filling the buffer" in text and "Filling the buffer: 0%" not in text)


def start_camera(driver, url: str, log_path: Path) -> None:
    driver.get(url)                                          # the Live page is the default page
    if not wait_until(lambda: press_webrtc_button(driver, "START"), PAGE_READY_SECONDS):
        pytest.fail(f"no START button on the Live page:\n{log_path.read_text()[-3000:]}")
    if not wait_until(lambda: frames_arrived(driver), FIRST_FRAME_SECONDS):
        # A peer connection sometimes drops while starting: stop and start once more.
        press_webrtc_button(driver, "STOP")
        time.sleep(2)
        press_webrtc_button(driver, "START")
        if not wait_until(lambda: frames_arrived(driver), FIRST_FRAME_SECONDS):
            pytest.fail(f"no camera frame reached the model; page says {top3_text(driver)!r}\n"
                        f"{log_path.read_text()[-3000:]}")


def wait_for_sentence(driver, expected: list[str], seconds: float) -> list[str]:
    """Poll the sentence until it lists `expected` in order; the last sentence seen."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = sentence_signs(driver) or seen
        if lists_in_order(seen, expected):
            return seen
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"the Live page's sentence never listed {expected} in order; last seen: {seen}; "
                         f"now: {top3_text(driver)!r}")


def save_page_screenshot(driver, path: Path) -> None:
    """The whole page (the window grown to Streamlit's scrolling content), as PNG."""
    height = driver.execute_script(
        "const main = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "return main.scrollHeight;")
    driver.set_window_size(1400, min(max(int(height) + 40, 1000), 4000))
    time.sleep(1.5)                                           # charts re-layout at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def screenshot_live_page(driver) -> None:
    """The Live page as it is, once its sentence is written (it fits the window as is)."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    (SCREENSHOT_DIR / "live.png").write_bytes(driver.get_screenshot_as_png())


def screenshot_results_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By
    driver.get(f"{url}/results")
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-testid='stVegaLiteChart']")
               and driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img"), PAGE_READY_SECONDS)
    time.sleep(3)                                             # images and charts finish drawing
    save_page_screenshot(driver, SCREENSHOT_DIR / "results.png")


def signs_the_live_path_gets_right(root: Path, stream: Path, truth: list[str]) -> list[str]:
    """The true signs, in order, that the library's live path emits in their place on this file, offline."""
    from stages.lib.served import load_bundle
    from stages.lib.stream_scoring import align
    from stages.lib.streaming import default_spotting, model_spotting
    from stages.tools.infer import spot_video_file
    bundle = load_bundle(root / "models/model.keras")
    assert bundle.spotting_record is not None, "the default pipeline ran without its calibrate stage"
    spotting = model_spotting(bundle, default_spotting())   # what the Live page starts with: the model's own
    emitted = [sign.sign for sign in spot_video_file(bundle, str(stream), spotting)]
    _, matches = align(emitted, truth)
    return [truth[true_index] for _, true_index in matches]


def test_live_page_writes_the_sentence_of_a_continuous_stream(default_workspace, tmp_path, app_server, chromium):
    require_browser()
    stream, truth = first_test_stream(default_workspace, MIN_STREAM_SIGNS)
    expected = signs_the_live_path_gets_right(default_workspace, stream, truth)
    assert len(expected) >= max(MIN_STREAM_SIGNS, len(truth) - 1), (
        f"offline, the default model's live path got only {expected} of {truth} on {stream.name}")
    frames, fps = read_frames(stream)
    url, log_path = app_server(default_workspace)
    driver = chromium(write_y4m(tmp_path / "camera.y4m", frames, fps))
    start_camera(driver, url, log_path)
    wait_for_sentence(driver, expected, LOOPS_TO_WAIT * len(frames) / fps + PAGE_READY_SECONDS)
    if TAKE_SCREENSHOTS:
        screenshot_live_page(driver)
        run(DVC + ["repro", "evaluate"], default_workspace, timeout=3600)     # the Results page's figures
        screenshot_results_page(driver, url)
