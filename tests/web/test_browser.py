"""The live page in headless Chromium, its microphone fed from a WAV file of real speech."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.testing import noise
from tests.fixtures import spoken
from tests.web.conftest import TOKEN

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def fake_microphone(folder: Path) -> Path:
    """Two sentences, then 4 s of room tone (the file loops: speech comes back after)."""
    speech = spoken(folder / "speech.wav", "I cannot believe you did that to me. "
                    "This is the worst day of my whole life.")  # fmt: skip
    if speech is None:
        pytest.skip("espeak-ng is not installed")
    audio, rate = soundfile.read(speech, dtype="float32")
    room = lambda seconds, seed: noise(seconds, level=0.002, seed=seed, rate=rate)  # noqa: E731
    microphone = folder / "microphone.wav"
    samples = np.concatenate([room(0.5, 1), audio, room(4.0, 2)]).astype(np.float32)
    soundfile.write(microphone, samples, rate, subtype="PCM_16")
    return microphone


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as Driver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-dev-shm-usage",
        "--window-size=1000,1300",
        "--use-fake-ui-for-media-stream",  # grant the microphone without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_microphone(tmp_path)}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Driver(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_streams_the_microphone_and_shows_the_session(service, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{service.url}/?token={TOKEN}")
    labels = [row.get_attribute("data-label") for row in browser.find_elements(By.CSS_SELECTOR,
              "#bars .bar")]  # fmt: skip
    assert len(labels) == 8
    browser.find_element(By.ID, "start").click()

    def updates(driver) -> int:
        return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates"))

    WebDriverWait(browser, 60).until(lambda d: updates(d) >= 2)
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#bars .fill')]"
        ".map((e) => e.getBoundingClientRect().width)"
    )
    assert sum(widths) > 100, widths  # the bars are drawn, not only their numbers
    assert browser.find_element(By.ID, "label").text.lower() in [*labels, "uncertain"]
    summary = browser.find_element(By.ID, "summary")
    WebDriverWait(browser, 60).until(lambda _: summary.is_displayed())
    shot = tmp_path / "live-page.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("SER_STREAM_SCREENSHOT"):
        shutil.copy(shot, os.environ["SER_STREAM_SCREENSHOT"])
    text = summary.text
    assert "ended by\nsilence" in text or "ended by silence" in text, text
    assert "dominant" in text and "predicted of" in text
    assert browser.find_element(By.ID, "errors").text == ""
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
