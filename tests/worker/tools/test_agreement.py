"""``fetalhc agreement``: Bland-Altman figures against a hand computation, and end to end from reports and images."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from db import AgreementPair
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.dicom_io.ob_reports import Fetus, write_ob_report
from worker.cli import main
from worker.tools.agreement import agreement, agreement_report

DAY = dt.date(2026, 3, 2)


def test_bland_altman_figures_match_a_hand_computation() -> None:
    pairs = [AgreementPair(170.0, 168.0, DAY, "Voluson E10"), AgreementPair(200.0, 203.0, DAY, "Voluson E10"),
             AgreementPair(150.0, 149.0, dt.date(2026, 4, 1), None)]
    # differences 2, -3, 1: mean 0, sample SD sqrt((4 + 9 + 1) / 2) = sqrt(7)
    stats = agreement(pairs)
    assert stats is not None and stats.n == 3
    assert stats.bias_mm == 0.0 and stats.sd_mm == pytest.approx(7 ** 0.5, abs=1e-3)
    assert stats.lower_loa_mm == pytest.approx(-1.96 * 7 ** 0.5, abs=1e-3)
    assert stats.upper_loa_mm == pytest.approx(1.96 * 7 ** 0.5, abs=1e-3)
    assert stats.mean_abs_diff_mm == pytest.approx(2.0)
    report = agreement_report(pairs)
    assert report["by_scanner_model"]["Voluson E10"]["bias_mm"] == -0.5
    assert report["by_scanner_model"]["unknown"]["n"] == 1 and report["by_scanner_model"]["unknown"]["sd_mm"] is None
    assert set(report["by_month"]) == {"2026-03", "2026-04"}
    assert agreement([]) is None


def test_agreement_from_stored_reports_and_images(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for i, sono_hc in enumerate((105.0, 112.0)):
        study = generate_uid()
        files.append(write_ob_report(tmp_path / f"report{i}.dcm", study_uid=study, study_date=DAY,
                                     edd=dt.date(2026, 7, 20), fetuses=(Fetus(hc_mm=sono_hc),)))
        phantom = make_phantom(shape=(300, 420), hc_mm=110.0, spacing_mm=0.12, seed=3 + i)
        files.append(write_us_image(tmp_path / f"image{i}.dcm", phantom.image, phantom.spacing_mm,
                                    identity=ScanIdentity(patient_id="P1", study_date=DAY, study_uid=study)))
    assert main(["process", "--json", *map(str, files)]) == 0
    measured = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    diffs = [r["hc_mm"] - s for r, s in zip([m for m in measured if m.get("hc_mm")], (105.0, 112.0))]

    plot = tmp_path / "ba.png"
    assert main(["agreement", "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall"]["n"] == 2, measured
    assert report["overall"]["bias_mm"] == pytest.approx(sum(diffs) / 2, abs=0.02)
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["agreement", "--since", "2026-04-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] is None


def test_reviewers_are_a_third_reader(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from db import Measurement, ReviewDecision, session_scope, set_report_facts
    from tests.worker.review_support import store_flagged_scans
    from worker.core.settings import get_settings
    from worker.measure.review import Decision, apply_review

    url = get_settings().database_url
    scans = store_flagged_scans(url, tmp_path / "scans", 4)
    sonographer = {scans[0].id: 120.0, scans[1].id: 118.0}  # the other two studies have no report
    decisions = [Decision(ReviewDecision.ACCEPTED), Decision(ReviewDecision.CORRECTED, hc_mm=125.0),
                 Decision(ReviewDecision.CORRECTED, hc_mm=130.0), Decision(ReviewDecision.REJECTED_NOT_HEAD)]
    model_hc = {}
    with session_scope(url) as session:
        for scan, decision in zip(scans, decisions):
            row = session.get(Measurement, scan.id)
            assert row is not None
            model_hc[scan.id] = row.hc_mm
            if scan.id in sonographer:
                set_report_facts(session, scan.id, {"sonographer_hc_mm": sonographer[scan.id]})
            apply_review(session, row, "alice", decision, "intergrowth")
    assert main(["agreement", "--json"]) == 0
    reviewer = json.loads(capsys.readouterr().out)["reviewer"]
    model = reviewer["fetalhc_vs_reviewer"]
    diffs = [0.0, model_hc[scans[1].id] - 125.0, model_hc[scans[2].id] - 130.0]  # the rejected row reads no HC
    assert model["overall"]["n"] == 3 and model["decisions"] == {"accepted": 1, "corrected": 2}
    assert model["overall"]["bias_mm"] == pytest.approx(sum(diffs) / 3, abs=1e-3)
    sono = reviewer["sonographer_vs_reviewer"]
    assert sono["overall"]["n"] == 2
    assert sono["overall"]["bias_mm"] == pytest.approx(((120.0 - model_hc[scans[0].id]) + (118.0 - 125.0)) / 2,
                                                       abs=1e-3)
    assert main(["agreement"]) == 0
    text = capsys.readouterr().out
    assert "fetalhc minus reviewer HC (1 accepted, 2 corrected)" in text
    assert "sonographer minus reviewer HC (1 accepted, 1 corrected)" in text
