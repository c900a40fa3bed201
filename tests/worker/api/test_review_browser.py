"""The Review and Patient views in headless Chromium (Selenium): a reviewer with a named token works through ten
flagged scans with the keyboard (accepts, rejects one as not a head plane, corrects one by dragging a handle of the
ellipse while the HC follows), and every decision is in ``reviews`` with the name; the patient view shows the rows'
thumbnails and the growth chart. Skipped where Chromium is not installed (``.ci/run`` installs it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db import Measurement, Review, session_scope
from tests.worker.api.test_api import running
from tests.worker.api.test_page_browser import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 - the fixture
from tests.worker.review_support import store_flagged_scans
from worker.core.settings import get_settings
from worker.core.tokens import add_token

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402 - after the skip
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PATIENT = "P-REVIEW"


def _hc_shown(driver: Any) -> float:
    return float(driver.find_element(By.ID, "rv-hc").text)


def _press(driver: Any, key: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def _class_of(driver: Any, element_id: str) -> str:
    """An element's class, read in the page (the worklist's rows are redrawn: no stale references)."""
    return str(driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.className : ''",
                                     element_id))


def _selected(driver: Any) -> str:
    return str(driver.execute_script("const e = document.querySelector('#wl-body tr.selected'); return e ? e.id : ''"))


def _wait_image(driver: Any, wait: WebDriverWait, row_id: int) -> None:
    wait.until(lambda d: d.find_element(By.ID, "rv-svg").get_attribute("data-ready") == str(row_id))


def test_a_reviewer_works_through_flagged_scans_with_the_keyboard(fetalhc_env: pytest.MonkeyPatch, browser: Any,
                                                                  tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    fetalhc_env.setenv("FETALHC_API_TOKENS_FILE", str(tokens))
    token = add_token(tokens, "alice")
    get_settings.cache_clear()
    url_db = get_settings().database_url
    scans = store_flagged_scans(url_db, tmp_path / "scans", 10, patient_id=PATIENT, hc_error_mm=-10.0)
    (gate,) = store_flagged_scans(url_db, tmp_path / "gate", 1, patient_id="P-GATE", status="not_head", first_seed=12)
    with running() as url:
        driver = browser
        wait = WebDriverWait(driver, 30)
        driver.get(url + "/#review")
        driver.find_element(By.ID, "token").send_keys(token + Keys.TAB)  # change: the worklist loads with it
        wait.until(lambda d: "reviewing as alice" in d.find_element(By.ID, "reviewer").text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wl-body tr")) == 10)
        assert _selected(driver) == f"wl-row-{scans[0].id}"

        plan = ["a", "r", "drag", "a", "u", "a", "a", "n", "typed", "a"]
        corrected_hc = None
        for scan, step in zip(scans, plan):
            _wait_image(driver, wait, scan.id)
            assert f"Measurement {scan.id}" in driver.find_element(By.ID, "rv-title").text
            if step == "drag":
                before = _hc_shown(driver)
                handle = driver.find_element(By.ID, "rv-handle-major")
                ActionChains(driver).click_and_hold(handle).move_by_offset(25, 0).move_by_offset(15, 0).release().perform()
                wait.until(lambda d: _hc_shown(d) != before)
                assert driver.find_elements(By.ID, "rv-edit")  # the corrected ellipse is drawn beside the model's
                corrected_hc = _hc_shown(driver)
                assert corrected_hc > before  # the major axis was pulled outwards: the HC followed, live
                _press(driver, "s")
            elif step == "typed":
                field = driver.find_element(By.ID, "rv-typed-hc")
                field.send_keys("150.5" + Keys.ENTER)
            else:
                _press(driver, step)
            if step != "n":
                wait.until(lambda d, sid=scan.id: "decided" in _class_of(d, f"wl-row-{sid}"))
        # the one skipped with N comes round again; deciding it finishes the worklist
        wait.until(lambda d: _selected(d) == f"wl-row-{scans[7].id}")
        _wait_image(driver, wait, scans[7].id)
        _press(driver, "a")
        wait.until(lambda d: "the worklist is done" in d.find_element(By.ID, "rv-msg").text)

        # auditing the gate: a not_head row has no ellipse; one is dragged into place and saved
        Select(driver.find_element(By.ID, "wl-status")).select_by_value("not_head")
        wait.until(lambda d: _selected(d) == f"wl-row-{gate.id}")
        _wait_image(driver, wait, gate.id)
        assert driver.find_elements(By.ID, "rv-placeholder")
        ActionChains(driver).click_and_hold(driver.find_element(By.ID, "rv-handle-centre")).move_by_offset(10, 5) \
            .release().perform()
        wait.until(lambda d: d.find_elements(By.ID, "rv-edit"))
        _press(driver, "s")
        wait.until(lambda d: "decided" in _class_of(d, f"wl-row-{gate.id}"))

        # the patient's rows: thumbnails and the growth chart
        driver.get(url + f"/#patient/{PATIENT}")
        # nine: the row rejected as no head plane is out of the patient's results, the unusable one stays
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pt-rows .thumb img")) == 9)
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                                 for img in d.find_elements(By.CSS_SELECTOR, "#pt-rows .thumb img")))
        chart = driver.find_element(By.ID, "pt-chart")
        assert chart.get_attribute("data-points") == "8"  # the unusable row has no HC to plot
        assert len(driver.find_elements(By.CSS_SELECTOR, "#pt-chart circle.point.confirmed")) == 8
        logs = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        assert not [e for e in logs if "Content Security Policy" in e.get("message", "")], logs

    expected = dict(zip((s.id for s in scans), ["accepted", "rejected_not_head", "corrected", "accepted",
                                                  "rejected_unusable", "accepted", "accepted", None, "corrected",
                                                  "accepted"]))
    expected_order = [(k, v) for k, v in expected.items() if v] + [(scans[7].id, "accepted"), (gate.id, "corrected")]
    with session_scope(url_db) as session:
        reviews = list(session.scalars(select(Review).order_by(Review.id)))
        assert [(r.measurement_id, r.decision) for r in reviews] == expected_order
        assert {r.reviewer for r in reviews} == {"alice"}
        rows = {m.id: m for m in session.scalars(select(Measurement))}
        dragged = rows[scans[2].id]
        assert dragged.review_decision == "corrected" and dragged.reviewed_by == "alice"
        assert dragged.reviewed_hc_mm == pytest.approx(corrected_hc, abs=0.06)  # what the page showed is stored
        assert dragged.reviewed_hc_mm > dragged.hc_mm
        assert rows[scans[8].id].reviewed_hc_mm == 150.5
        assert rows[scans[7].id].review_decision == "accepted"  # skipped with N at first, decided last
        placed = rows[gate.id]  # the gate's not_head row, now a head with the HC of the ellipse placed
        assert (placed.status, placed.review_decision, placed.hc_mm) == ("not_head", "corrected", None)
        assert placed.reviewed_hc_mm is not None and 50 <= placed.reviewed_hc_mm <= 450
        assert re.fullmatch(r"[a-z_]+", rows[scans[1].id].review_decision or "")
