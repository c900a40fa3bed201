"""The web page in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by
Selenium) opens ``/``, picks a DICOM, presses Measure and finds the overlay image, HC and the HC centile
for a typed GA; with a token set, the same after typing the token. Skipped where Chromium is not installed
(``.ci/run`` installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worker.api.test_api import running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SAMPLES = Path(__file__).resolve().parents[3] / "worker" / "demo_samples"
HEAD = SAMPLES / "hc18_446_HC.dcm"  # true HC 171.7 mm (samples.json): about 20 weeks
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402 - after the skip
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def measure_on_the_page(driver: Any, url: str, token: str | None = None) -> dict[str, str]:
    driver.get(url + "/")
    wait = WebDriverWait(driver, 120)
    wait.until(ec.text_to_be_present_in_element((By.ID, "health"), "ready"))  # /healthz answered 200
    if token is not None:
        driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "file").send_keys(str(HEAD))
    driver.find_element(By.ID, "ga").send_keys("20+0")
    driver.find_element(By.ID, "measure").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result img")
               or d.find_element(By.ID, "result").text.strip())
    image = driver.find_element(By.CSS_SELECTOR, "#result img")
    text = driver.find_element(By.ID, "result").text
    return {"src": image.get_attribute("src") or "", "text": text,
            "status": driver.find_element(By.ID, "result-status").text,
            "complete": str(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                  image))}


def _assert_measured(shown: dict[str, str]) -> None:
    assert shown["src"].startswith("data:image/png;base64,") and shown["complete"] == "True"  # the overlay, drawn
    assert shown["status"] in ("measured", "needs review", "needs_review"), shown
    text = shown["text"]
    assert "HC (mm)" in text and "HC centile" in text, text
    hc = float(text.split("HC (mm)")[1].split()[0])
    assert 150 < hc < 195  # true HC 171.7 mm
    centile = float(text.split("HC centile")[1].split()[0])
    assert 0 <= centile <= 100
    assert "20+0 wk (given)" in text


def test_the_page_measures_a_dicom_in_chromium(fetalhc_env: pytest.MonkeyPatch, browser: Any) -> None:
    with running() as url:
        _assert_measured(measure_on_the_page(browser, url))


def test_the_page_measures_after_typing_the_token(fetalhc_env: pytest.MonkeyPatch, browser: Any) -> None:
    fetalhc_env.setenv("FETALHC_API_TOKEN", "browser-t0ken")
    with running() as url:
        _assert_measured(measure_on_the_page(browser, url, token="browser-t0ken"))
