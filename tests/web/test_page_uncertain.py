"""The live page says "uncertain" for a window the model is not sure of (headless Chromium)."""

from __future__ import annotations

import html
import json
import shutil
from importlib.resources import files

import pytest

from ser_stream.labels import LABELS

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def record(label: str, top: float, confident: bool | None, t_start: float = 0.5) -> dict:
    """A ``prediction`` record of docs/records.md with ``label`` at ``top``."""
    rest = (1 - top) / (len(LABELS) - 1)
    probabilities = {name: (top if name == label else rest) for name in LABELS}
    return {"kind": "prediction", "stream": "s", "seq": 0, "t_start": t_start,
            "t_end": t_start + 3, "label": label, "confident": confident,
            "probabilities": probabilities, "latency_ms": 20.0}  # fmt: skip


def summary(confident: int, uncertain: int) -> dict:
    mean = record("angry", 0.31, None)["probabilities"]
    return {"kind": "session_end", "reason": "silence",
            "summary": {"dominant": "angry", "windows": 2, "predicted": 2, "dropped": 0,
                        "duration_s": 4.0, "mean_probabilities": mean,
                        "confident": confident, "uncertain": uncertain}}  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The served page, its labels filled in as ``serve`` does, open in headless Chromium."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as Driver

    text = files("ser_stream.web").joinpath("live.html").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("page") / "live.html"
    path.write_text(text.replace("__LABELS__", html.escape(json.dumps(list(LABELS)))))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Driver(CHROMEDRIVER), options=options)
    driver.get(path.as_uri())
    yield driver
    driver.quit()


def show(page, *records: dict) -> None:
    """Hand records to the page as its WebSocket would."""
    page.execute_script(
        "session = { windows: [] }; for (const r of arguments[0]) handle(r);", list(records)
    )


def text_of(page, element_id: str) -> str:
    return page.execute_script(f"return document.getElementById('{element_id}').textContent;")


def test_an_unsure_window_shows_uncertain_with_its_guess(page):
    """confident false: the label reads "uncertain", the guess and its share beneath it."""
    show(page, record("angry", 0.31, False))
    assert text_of(page, "label") == "uncertain"
    assert text_of(page, "guess") == "angry? 31%"
    top = page.execute_script("return document.querySelector('#bars .bar.top').className;")
    assert "unsure" in top


@pytest.mark.parametrize("confident", [True, None])
def test_a_sure_or_unknown_window_shows_its_label(page, confident):
    """confident true, or null (a model without a threshold): the label as before."""
    show(page, record("angry", 0.31, False), record("sad", 0.8, confident, t_start=2.0))
    assert text_of(page, "label") == "sad"
    assert text_of(page, "guess") == ""


def test_the_summary_counts_and_an_all_unsure_session_is_uncertain(page):
    """The summary counts confident windows; with none, the dominant reads uncertain."""
    show(page, summary(confident=1, uncertain=1))
    rows = text_of(page, "summary-rows")
    assert "dominantangry" in rows and "confident1 of 2 windows (1 uncertain)" in rows
    show(page, summary(confident=0, uncertain=2))
    assert "dominantuncertain (angry? 31%)" in text_of(page, "summary-rows")
    show(page, summary(confident=0, uncertain=0))
    assert "confident" not in text_of(page, "summary-rows")
    severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
