"""Growth facts on rows: GA source order, dating manifests, the centile calculator and the chart."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from PIL import Image

from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from models.growth import hc_centile, hc_quantile
from worker.cli import main
from worker.measure.dating import GestationalAge, ga_for_centile, growth_facts
from worker.measure.manifest import Dating, Manifest

SCAN_DATE = dt.date(2026, 4, 10)


def test_ga_source_order_given_then_lmp_then_none() -> None:
    lmp = SCAN_DATE - dt.timedelta(days=150)
    assert ga_for_centile(140.0, lmp, SCAN_DATE) == GestationalAge(140.0, "given")
    assert ga_for_centile(None, lmp, SCAN_DATE) == GestationalAge(150.0, "lmp")
    assert ga_for_centile(None, None, SCAN_DATE) == GestationalAge(None, "none")
    assert ga_for_centile(None, SCAN_DATE + dt.timedelta(days=3), SCAN_DATE) == GestationalAge(None, "none")


def test_growth_facts_never_use_the_ga_estimated_from_the_same_hc() -> None:
    facts = growth_facts(175.0, GestationalAge(None, "none"), "intergrowth")
    assert facts.ga_estimate_days is not None and facts.ga_estimate_days > 0
    assert facts.centile.centile is None and facts.centile.reason == "no_ga"
    cols = facts.columns()
    assert (cols["ga_days"], cols["ga_source"], cols["hc_centile"]) == (None, "none", None)


def test_growth_facts_for_a_median_head_at_a_known_ga() -> None:
    median = hc_quantile("intergrowth", 196.0, 50)
    cols = growth_facts(median, GestationalAge(196.0, "lmp"), "intergrowth").columns()
    assert cols["hc_centile"] == pytest.approx(50.0, abs=0.01)
    assert cols["hc_z_score"] == pytest.approx(0.0, abs=1e-3)
    assert cols["growth_standard"] == "intergrowth"
    assert cols["growth_flags"] is None
    small = growth_facts(hc_quantile("who", 196.0, 2), GestationalAge(196.0, "given"), "who").columns()
    assert small["growth_flags"] == "below_p3,below_p10"


def test_manifest_keys_and_dating_kinds(tmp_path: Path) -> None:
    path = tmp_path / "dating.csv"
    path.write_text("sop_instance_uid,study_instance_uid,accession_number,ga_days,lmp,edd\n"
                    "1.2.3,,,150,,\n"
                    ",9.9,,,2025-11-11,\n"
                    ",,ACC7,,,2026-08-01\n")
    manifest = Manifest.load(path)
    assert manifest.lookup("1.2.3", "9.9", "") == Dating(ga_days=150.0)  # most specific key wins
    assert manifest.lookup("x", "9.9", "").ga_at(SCAN_DATE) == float((SCAN_DATE - dt.date(2025, 11, 11)).days)
    assert manifest.lookup("x", "y", "ACC7").ga_at(SCAN_DATE) == 280 - (dt.date(2026, 8, 1) - SCAN_DATE).days
    assert manifest.lookup("x", "y", "z") is None


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,ga_days\nA,100\n")
    with pytest.raises(ValueError, match="key column"):
        Manifest.load(bad)
    both = tmp_path / "both.csv"
    both.write_text("sop_instance_uid,ga_days,lmp\n1.2,100,2026-01-01\n")
    with pytest.raises(ValueError, match="line 2: give exactly one"):
        Manifest.load(both)


def test_process_with_manifest_uses_the_given_ga(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_phantom(hc_mm=200.0, spacing_mm=0.15, seed=4)
    ident = ScanIdentity(study_date=SCAN_DATE, accession_number="ACC42",
                         last_menstrual_date=SCAN_DATE - dt.timedelta(days=100))
    scan = write_us_image(tmp_path / "scans" / "s.dcm", phantom.image, 0.15, identity=ident)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"accession_number,edd\nACC42,{(SCAN_DATE + dt.timedelta(days=80)).isoformat()}\n")

    assert main(["process", "--json", "--manifest", str(manifest), str(scan)]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])

    # The manifest (EDD -> 200 days) wins over the LMP in the header (100 days).
    assert (row["ga_days"], row["ga_source"]) == (200.0, "given")
    expected = hc_centile(row["hc_mm"], 200.0, "intergrowth")
    assert row["hc_centile"] == pytest.approx(expected.centile, abs=1e-6)


def test_centile_calculator_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["centile", "--hc-mm", "250", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ga_estimates"]["intergrowth_2016"]["ga_days"] == pytest.approx(189.8, abs=0.1)
    assert "centile" not in out
    assert main(["centile", "--hc-mm", "260.4", "--ga-days", "196", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["centile"] == pytest.approx(50, abs=1.0)
    assert main(["centile", "--hc-mm", "100", "--ga-days", "60", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["centile"] is None and out["reason"].startswith("ga_out_of_range")


def test_results_chart_draws_a_png(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from db import session_scope, upgrade, upsert_measurement
    from worker.core.settings import get_settings

    url = get_settings().database_url
    upgrade(url)
    with session_scope(url) as s:
        for i, (ga, hc) in enumerate([(140, 150.0), (200, 230.0), (250, 290.0)]):
            upsert_measurement(s, {"sop_instance_uid": f"1.{i}", "frame": 1, "model_version": "v", "status": "measured",
                                   "patient_id": "P7", "hc_mm": hc, "ga_days": float(ga),
                                   "study_date": SCAN_DATE + dt.timedelta(days=ga)})
    chart = tmp_path / "chart.png"
    assert main(["results", "--patient", "P7", "--chart", str(chart)]) == 0
    assert "3 rows" in capsys.readouterr().out
    with Image.open(chart) as img:
        assert img.size[0] > 400 and img.size[1] > 300
