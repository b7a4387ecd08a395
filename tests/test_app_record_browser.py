"""Your own signs in a real browser: record them on the Record page, train on the Train page, recognise them live.

Usage:
    python -m pytest -q tests/test_app_record_browser.py        # a few minutes on two cores
    SIGNLANG_SCREENSHOTS=1 python -m pytest -q tests/test_app_record_browser.py   # also reports/figures/
                                                # record.png, train.png and model.png for the README

The app serves a fresh git + DVC repository (the pipeline, no model, no
recordings), as a user's clone is before they record. Headless Chromium's
fake camera plays a built-in clip in a loop: a sign (`wave`, `clap`,
`spread_hands`) or idle footage (`_none`), fourteen takes by one drawn signer,
then fourteen by the other (one person in front of the camera at a time, as in
a room; the loop outlasts the eight clips of a sign, so no clip repeats a
take however fast or slow the machine records). One camera file per browser
launch, so the test relaunches the browser for each. On the Record page it
types the sign, then a signer's name, and presses Record and Keep four times
for each of two signer names (`ana`, `ben`): eight clips per sign; one clip
more is played back and discarded. On the Train page it presses "Train on my
recordings" with test-sized params passed the way a user passes them:
params.yaml `record.train_overrides` (windows of 8 frames at 5 frames/s, a
small head; frames at the default 224 px, MobileNetV2's own size), which the
page prefills as its extra `-S` settings. When the run has finished it
relaunches the browser with held-out takes (two repetitions of `clap` by one
drawn signer, then two by the other, that the camera never played while
recording), makes the new model the one Live uses with one click on the
Model page, goes to Live, checks that the confidence threshold slider starts
at the threshold the calibrate stage kept for this model (from its own
validation clips; params.yaml's 0.9 suits the default model), lowers it to
0.6 when it starts higher (as a user would whose sign is not named: a model of
32 clips can be surer of its validation clips than of new takes), and waits
until the sentence names `clap`.

Needs Chromium and chromedriver, like tests/test_app_browser.py (skipped without them unless CI is set).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_workspace
from tests.test_app_browser import (  # noqa: F401
    SCREENSHOT_DIR,
    TAKE_SCREENSHOTS,
    app_server,
    frames_arrived,
    press_webrtc_button,
    require_browser,
    save_page_screenshot,
    sentence_signs,
    start_chromium,
    top3_text,
    wait_until,
    write_y4m,
)

SIGNS = ("wave", "clap", "spread_hands")
IDLE = "_none"
SIGNERS = ("ana", "ben")
CLIPS_PER_SIGNER = 4                      # 8 clips of each sign: with 6, the hashed split once left a sign 3 for training
HELD_OUT_SIGN = "clap"
SEED, CAMERA_FPS, CAMERA_WIDTH, CAMERA_HEIGHT = 42, 25, 160, 120
DRAWN_SIGNERS = (0, 1)                    # the synthetic people the cameras show: one block of takes each
# Repetitions 0..13 per drawn signer in the recording loops: about 52 s, more than the eight clips of a sign
# take to record (about 45 s). With five takes each, signers alternating, the loop (19 s) wrapped while
# recording; when it lasted about a whole number of Record cycles, the second name's clips of `clap` began
# within six frames of the first's, and the model trained on them never named a held-out `clap` live (CI,
# stop 24).
TAKES_PER_SIGNER = 14
# Live: two new repetitions by each drawn signer (never in the recording loops), as a user tries a sign again.
HELD_OUT_REPETITIONS = range(TAKES_PER_SIGNER, TAKES_PER_SIGNER + 2)
# What the workspace's params.yaml says, as a user would set it for a quick first run.
RECORD_PARAMS = {
    # Clips of the app's default length (2.5 s) hold a whole take (about 1.9 s) wherever they start; 1.5 s ones
    # often held half of one and half of the next (simulated without the browser: 0.66 vs 0.90 of the
    # held-out `clap` windows named right at worst, in 6 and 4 trials).
    "seconds": 2.5, "countdown_seconds": 0.3, "target_clips": 8,
    "train_overrides": ["base.seq_len=8", "sample.fps=5", "sample.min_frames=4",
                        "train.epochs=40", "train.patience=15", "train.lstm_units=16", "train.batch_size=16",
                        "train.learning_rate=0.003", "train.windows_per_clip=8", "train.edge_windows=0"],
}

PAGE_READY_SECONDS = 90
CAMERA_ON_SECONDS = 20                    # after START; then START once more
CLIP_SECONDS = 20                         # Record pressed -> the clip saved and shown
RUN_SECONDS = 420                         # the pipeline on the recordings, on two busy cores
LIVE_SECONDS = 60
# A model of 32 clips can be surer of its validation clips (other takes by the same two people) than of
# the held-out takes: one stayed at 0.6-0.8 on held-out `clap`, under the 0.9 it kept (stop 24). Then the
# test lowers the slider to this, as a user would whose sign the page does not name.
LIVE_THRESHOLD = 0.6
STATUS_SELECTOR = ".st-key-record_status"

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"), pytest.mark.real_time]


# --- the cameras --------------------------------------------------------------------------------

def sign_loop(sign_name: str, repetitions: range) -> np.ndarray:
    """Takes of one sign, little rest around each: every repetition by one drawn signer, then by the next
    (a person changes once a block, not within a window): (frames, H, W, 3) BGR."""
    from stages.lib.synthetic import SIGNS as VOCABULARY
    from stages.lib.synthetic import make_signer, render_clip, render_idle_clip
    takes = []
    for signer_index in DRAWN_SIGNERS:
        signer = make_signer(signer_index, SEED, CAMERA_WIDTH, CAMERA_HEIGHT)
        for repetition in repetitions:
            if sign_name == IDLE:
                takes.append(render_idle_clip(signer, repetition, SEED, CAMERA_FPS, 2.0))
            else:
                sign = next(sign for sign in VOCABULARY if sign.name == sign_name)
                takes.append(render_clip(sign, signer, repetition, SEED, CAMERA_FPS, 1.0, lead_seconds=(0.1, 0.2)))
    return np.concatenate(takes)


def camera_file(folder: Path, sign_name: str, repetitions: range = range(TAKES_PER_SIGNER)) -> Path:
    path = folder / f"{sign_name}_{repetitions.start}-{repetitions.stop}.y4m"
    return path if path.exists() else write_y4m(path, sign_loop(sign_name, repetitions), CAMERA_FPS)


class Browser:
    """One Chromium at a time, relaunched with another camera file (a fresh profile each time)."""

    def __init__(self, folder: Path):
        self.folder, self.driver, self.launches = folder, None, 0

    def launch(self, camera_y4m: Path):
        self.close()
        self.launches += 1
        self.driver = start_chromium(camera_y4m, self.folder / f"profile-{self.launches}")
        return self.driver

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None


@pytest.fixture
def browser(tmp_path):
    require_browser()
    opened = Browser(tmp_path)
    yield opened
    opened.close()


# --- the page, through selenium -----------------------------------------------------------------

def elements(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    try:
        return " ".join(element.text for element in elements(driver, selector))
    except Exception:  # redrawn between finding and reading
        return ""


def button(driver, label: str):
    """The enabled page button (outside the WebRTC iframe) with this label, or None."""
    try:
        for candidate in elements(driver, "[data-testid='stBaseButton-primary'], [data-testid='stBaseButton-secondary']"):
            if candidate.text.strip().endswith(label) and candidate.is_enabled():
                return candidate
    except Exception:
        return None
    return None


def click(driver, label: str, seconds: float = 30) -> None:
    found = wait_until(lambda: button(driver, label), seconds, interval=0.2)
    if not found:
        raise AssertionError(f"no enabled {label!r} button; the page says: {page_text(driver)[-1500:]}")
    found.click()


def page_text(driver) -> str:
    return text_of(driver, "[data-testid='stMain']")


def type_into(driver, key: str, text: str) -> None:
    """Replace a text field's value and commit it (Enter), as a user would."""
    from selenium.webdriver.common.keys import Keys
    field = wait_until(lambda: elements(driver, f".st-key-{key} input"), PAGE_READY_SECONDS)
    assert field, f"no field {key}"
    field[0].send_keys(Keys.CONTROL, "a")
    field[0].send_keys(Keys.DELETE, text, Keys.ENTER)
    wait_until(lambda: (found := elements(driver, f".st-key-{key} input")) and found[0].get_attribute("value") == text,
               10, interval=0.2)
    time.sleep(0.5)                                            # the rerun that follows


def choose_radio(driver, key: str, label: str) -> None:
    from selenium.webdriver.common.by import By
    options = wait_until(lambda: elements(driver, f".st-key-{key} label"), PAGE_READY_SECONDS)
    next(option for option in options if option.text.strip() == label).find_element(By.TAG_NAME, "div").click()
    time.sleep(0.5)


def start_camera(driver, ready, page_url: str | None = None) -> None:
    """Open a page (or stay on this one), press START in the WebRTC iframe (once more if no frame comes),
    and wait for `ready`."""
    if page_url:
        driver.get(page_url)
    if not wait_until(lambda: press_webrtc_button(driver, "START"), PAGE_READY_SECONDS):
        pytest.fail(f"no START button: {page_text(driver)[-1500:]}")
    if not wait_until(ready, CAMERA_ON_SECONDS):
        press_webrtc_button(driver, "STOP")
        time.sleep(2)
        press_webrtc_button(driver, "START")
        if not wait_until(ready, CAMERA_ON_SECONDS):
            pytest.fail(f"the camera never came on: {page_text(driver)[-1500:]}")


def record_one_clip(driver, tries: int = 3) -> None:
    """Record, wait for the clip to play back, Keep; each step waits for the page to say it happened
    (a button of the page before its rerun can linger a moment). When the page says nothing was saved
    (on a loaded machine the stream may stall) or the camera went off, do what it asks: record again,
    or press START again."""
    for attempt in range(1, tries + 1):
        if "Press START" in text_of(driver, STATUS_SELECTOR):
            press_webrtc_button(driver, "START")
            wait_until(lambda: "Camera on" in text_of(driver, STATUS_SELECTOR), CAMERA_ON_SECONDS, interval=0.2)
        click(driver, "Record")
        saved = wait_until(lambda: "Saved." in text_of(driver, STATUS_SELECTOR) and button(driver, "Keep")
                           or "nothing was saved" in page_text(driver), CLIP_SECONDS, interval=0.2)
        if saved and "nothing was saved" not in page_text(driver):
            click(driver, "Keep")
            if not wait_until(lambda: "Camera on" in text_of(driver, STATUS_SELECTOR), 15, interval=0.2):
                raise AssertionError(f"Keep did not take: {text_of(driver, STATUS_SELECTOR)!r}")
            return
        print(f"recording attempt {attempt} gave no clip: {text_of(driver, STATUS_SELECTOR)!r}; "
              f"{text_of(driver, '[data-testid=stAlert]')[:300]!r}")
    raise AssertionError(f"no clip came back in {tries} tries: {text_of(driver, STATUS_SELECTOR)!r}; the page "
                         f"says: {text_of(driver, '[data-testid=stAlert]')[:1500]}")


def record_sign(browser: Browser, cameras: Path, url: str, sign: str, clips_per_signer: int) -> None:
    """A browser whose camera plays `sign`; that many clips under each signer name."""
    driver = browser.launch(camera_file(cameras, sign))
    start_camera(driver, lambda: "Camera on" in text_of(driver, STATUS_SELECTOR), f"{url}/record")
    if sign == IDLE:
        choose_radio(driver, "record_kind", "No sign (idle)")
    else:
        type_into(driver, "record_new_sign", sign)
    for signer in SIGNERS:
        type_into(driver, "record_signer", signer)
        for _ in range(clips_per_signer):
            record_one_clip(driver)


def record_and_discard_one_more(driver) -> None:
    """One clip more, played back (the Record page's screenshot), then Discard: it must be gone."""
    if "Press START" in text_of(driver, STATUS_SELECTOR):
        press_webrtc_button(driver, "START")
        wait_until(lambda: "Camera on" in text_of(driver, STATUS_SELECTOR), CAMERA_ON_SECONDS, interval=0.2)
    click(driver, "Record")
    assert wait_until(lambda: "Saved." in text_of(driver, STATUS_SELECTOR) and button(driver, "Discard"),
                      CLIP_SECONDS, interval=0.2), text_of(driver, STATUS_SELECTOR)
    if TAKE_SCREENSHOTS:
        time.sleep(1.5)                                       # the clip plays back
        screenshot(driver, "record.png")
    click(driver, "Discard")
    assert wait_until(lambda: "Camera on" in text_of(driver, STATUS_SELECTOR), 15, interval=0.2)


def screenshot(driver, name: str) -> None:
    """The whole page, scrolled to its top, with the pointer off any tooltip."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    driver.execute_script("window.scrollTo(0, 0); for (const element of document.querySelectorAll("
                          "'[data-testid=\"stMain\"], [data-testid=\"stAppViewContainer\"]')) element.scrollTop = 0;")
    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
    save_page_screenshot(driver, SCREENSHOT_DIR / name)


def clip_counts(root: Path) -> dict[str, int]:
    folder = root / "data" / "recordings"
    return {sign.name: len(list(sign.glob("*.mp4"))) for sign in sorted(folder.iterdir()) if sign.is_dir()}


def signs_the_split_lacks(driver) -> list[str]:
    """The signs the Train page says need more clips before it can run: [] when it can, the signs it names,
    or every sign when a whole split is empty (each new clip lands in val with p = val_fraction only, so one
    clip more per retry left val empty three times running once in CI: stop 35)."""
    problems = [line for line in page_text(driver).splitlines() if line.startswith("Not yet:")]
    named = [sign for sign in SIGNS + (IDLE,) for line in problems if f"'{sign}'" in line]
    return named or (list(SIGNS + (IDLE,)) if problems else [])


# --- the test -----------------------------------------------------------------------------------

def test_record_train_and_recognise_your_own_signs(tmp_path, app_server, browser):  # noqa: F811
    timings, started = {}, time.monotonic()
    root = make_workspace(tmp_path / "repo", changes={"record": RECORD_PARAMS})
    url, log_path = app_server(root)
    cameras = tmp_path / "cameras"

    for sign in SIGNS + (IDLE,):
        record_sign(browser, cameras, url, sign, CLIPS_PER_SIGNER)
    assert clip_counts(root) == {sign: 2 * CLIPS_PER_SIGNER for sign in (IDLE, *SIGNS)}
    record_and_discard_one_more(browser.driver)
    assert clip_counts(root) == {sign: 2 * CLIPS_PER_SIGNER for sign in (IDLE, *SIGNS)}
    timings["record"] = time.monotonic() - started

    driver = browser.driver
    driver.get(f"{url}/train")
    wait_until(lambda: "The same run from a terminal" in page_text(driver), PAGE_READY_SECONDS)
    for _ in range(4):                            # the hashed split may ask for clips more: record them, as a user
        lacking = signs_the_split_lacks(driver)
        if not lacking:
            break
        for sign in dict.fromkeys(lacking):
            record_sign(browser, cameras, url, sign, 1)
        driver = browser.driver
        driver.get(f"{url}/train")
        wait_until(lambda driver=driver: "The same run from a terminal" in page_text(driver), PAGE_READY_SECONDS)
    assert "base.seq_len=8" in text_of(driver, "textarea")            # the params.yaml overrides, prefilled
    before = workspace_state(root)
    click(driver, "Train on my recordings")
    finished = wait_until(lambda: "The run finished" in page_text(driver) or "The run failed" in page_text(driver),
                          RUN_SECONDS, interval=2)
    assert finished and "The run finished" in page_text(driver), page_text(driver)[-3000:]
    assert "Test accuracy" in page_text(driver)
    assert workspace_state(root) == before            # the run went on outside the workspace (dvc exp run --temp)
    assert not (root / "models/model.keras").exists()         # the default model's place stays as it was
    if TAKE_SCREENSHOTS:
        screenshot(driver, "train.png")
    timings["train"] = time.monotonic() - started - timings["record"]

    driver = browser.launch(camera_file(cameras, HELD_OUT_SIGN, HELD_OUT_REPETITIONS))
    driver.get(f"{url}/model")
    # The run left the workspace as it was, without a default model (this repository never ran
    # `dvc repro`), so the model trained on the recordings is the only one and already the one in use;
    # beside a default model the page offers it with a button.
    assert wait_until(lambda: button(driver, "Use it on the Live page")
                      or "models/recordings/rec-" in selected_model(driver), PAGE_READY_SECONDS), page_text(driver)
    if TAKE_SCREENSHOTS:
        screenshot(driver, "model.png")
    if button(driver, "Use it on the Live page"):
        click(driver, "Use it on the Live page")
    assert wait_until(lambda: "models/recordings/rec-" in selected_model(driver), 30), selected_model(driver)
    navigate(driver, "Live")                       # in the same browser session: the choice holds
    start_camera(driver, lambda: frames_arrived(driver))
    # The slider starts at the threshold the calibrate stage kept for this model, not params.yaml's 0.9.
    calibrated = json.loads(next((root / "models/recordings").glob("rec-*/model.spotting.json")).read_text())
    print(f"\ncalibrated spotting threshold {calibrated['settings']['threshold']}: "
          f"{calibrated['calibration']['reason']}")
    assert slider_value(driver, "Confidence threshold") == pytest.approx(calibrated["settings"]["threshold"])
    if calibrated["settings"]["threshold"] > LIVE_THRESHOLD:
        set_slider(driver, "Confidence threshold", LIVE_THRESHOLD)
    named = wait_until(lambda: HELD_OUT_SIGN in sentence_signs(driver), LIVE_SECONDS)
    assert named, f"the Live page never named {HELD_OUT_SIGN}: sentence {sentence_signs(driver)}, " \
                  f"now {top3_text(driver)!r}\n{log_path.read_text()[-2000:]}"
    timings["live"] = time.monotonic() - started - timings["record"] - timings["train"]
    print(f"\nclips per sign {clip_counts(root)}; timings (s): "
          + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))


def workspace_state(root) -> tuple[str, str, bytes]:
    """What a Train-page run must leave as it was: `git status`, `dvc status`, and params.yaml's bytes."""
    import subprocess

    from tests.conftest import DVC, run_unchecked
    git = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    return git.stdout, run_unchecked(DVC + ["status", "--json"], root).stdout, (root / "params.yaml").read_bytes()


def slider_value(driver, label: str) -> float:
    """The value of the page slider labelled `label` (its range input's)."""
    inputs = elements(driver, f"[data-testid='stSlider'] input[type='range'][aria-label='{label}']")
    assert inputs, f"no slider {label!r}: {page_text(driver)[-1500:]}"
    return float(inputs[0].get_attribute("value"))


def set_slider(driver, label: str, value: float, presses: int = 40) -> None:
    """Move the page slider labelled `label` to `value` with the arrow keys, as a user at the keyboard
    (the slider's range input is focused, then the keys go to it)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    for _ in range(presses):
        now = slider_value(driver, label)
        if abs(now - value) < 1e-6:
            return
        inputs = elements(driver, f"[data-testid='stSlider'] input[type='range'][aria-label='{label}']")
        driver.execute_script("arguments[0].focus();", inputs[0])
        ActionChains(driver).send_keys(Keys.ARROW_LEFT if now > value else Keys.ARROW_RIGHT).perform()
        time.sleep(0.3)                                        # the rerun that follows
    raise AssertionError(f"the slider {label!r} did not reach {value}")


def selected_model(driver) -> str:
    """The Model page's choice: the value of its selectbox's input."""
    try:
        return " ".join(field.get_attribute("value") or "" for field in elements(driver, "[data-testid='stSelectbox'] input"))
    except Exception:  # redrawn between finding and reading
        return ""


def navigate(driver, title: str) -> None:
    """Click a page in the sidebar: Streamlit changes page within the same session (session state kept)."""
    link = wait_until(lambda: [link for link in elements(driver, "[data-testid='stSidebarNav'] a")
                               if link.text.strip().endswith(title)], PAGE_READY_SECONDS)
    assert link, f"no sidebar link {title!r}"
    link[0].click()
    time.sleep(1)
