"""report.json + report.html: JSON conversion, the HTML of a small report dict, and the atomic directory write."""
import base64
import json
import os
import re

import numpy as np
import pytest

from pipeline.evaluation.report import jsonable, render_html, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _sources(page):
    return re.findall(r"""\b(?:src|href)\s*=\s*['"]([^'"]*)""", page)


def test_jsonable_turns_numpy_into_python_and_non_finite_into_null():
    data = jsonable({1: np.int64(3), "a": np.array([[1.5, np.nan]]), "b": (np.float32(2), np.bool_(True)),
                     "c": [float("inf"), "x", None]})
    assert data == {"1": 3, "a": [[1.5, None]], "b": [2.0, True], "c": [None, "x", None]}
    assert type(data["1"]) is int and type(data["b"][1]) is bool
    json.dumps(data, allow_nan=False)


def test_render_html_shows_every_section_and_escapes_what_it_is_given(small_report):
    report, _ = small_report
    page = render_html(jsonable(report), {"samples": PNG + b"fake"})
    for heading in ("Counts", "Label fidelity", "Classification Accuracy Score (CAS)", "Novelty", "Diversity",
                    "Provenance"):
        assert f"<h2>{heading}" in page
    assert "out/&lt;a&amp;b&gt;" in page and "out/<a&b>" not in page and "a note &amp; more" in page
    assert f"{100 * report['fidelity']['fidelity']:.2f}%" in page and "CAS 95.00% vs ceiling 98.00%" in page
    # unequal step counts: the page says how to compare at an equal budget (4 steps per epoch over 60 rows of 16)
    assert "--cas-epochs 3 --cas-max-steps 12" in page
    assert _sources(page) == ["data:image/png;base64," + base64.b64encode(PNG + b"fake").decode()]


def test_sections_that_do_not_apply_say_why(small_report):
    report, _ = small_report
    report["cas"] = {"applicable": False, "reason": "skipped (cas_epochs = 0)"}
    report["diversity"].update(applicable=False, reason="the records are unlabeled")
    page = render_html(jsonable(report), {})
    assert "Not applicable: skipped (cas_epochs = 0)" in page and "Not applicable: the records are unlabeled" in page
    assert "<img" not in page


def test_write_report_is_self_contained_and_replaces_an_earlier_report_atomically(tmp_path, small_report,
                                                                                 make_sample):
    report, pictures = small_report
    report_dir = tmp_path / "rep"
    figures = write_report(str(report_dir), report, pictures)
    assert set(figures) == {"samples", "worst_fidelity", "latent_scatter", "novelty_hist", "closest_pairs"}
    page = (report_dir / "report.html").read_text()
    srcs = _sources(page)
    assert len(srcs) == len(figures) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    for rel in figures.values():
        assert (report_dir / rel).read_bytes()[:8] == PNG
    saved = json.loads((report_dir / "report.json").read_text())
    assert saved["figures"] == figures and saved["fidelity"] == jsonable(report["fidelity"])
    assert oct(os.stat(report_dir).st_mode & 0o777) == "0o755"
    # a failure while writing leaves the earlier report as it was, and no temporary directory behind
    before = {p: p.read_bytes() for p in report_dir.rglob("*") if p.is_file()}
    with pytest.raises(AttributeError):
        write_report(str(report_dir), dict(report), dict(pictures, syn=None))
    assert {p: p.read_bytes() for p in report_dir.rglob("*") if p.is_file()} == before
    assert os.listdir(tmp_path) == ["rep"]
    # unlabeled records without latents: no worst-fidelity grid or latent scatter, and none left from before
    syn = pictures["syn"]
    unlabeled = dict(pictures, syn=make_sample(syn.images, np.full(len(syn.labels), -1)),
                     fidelity={k: v for k, v in pictures["fidelity"].items() if k != "p_label"})
    figures = write_report(str(report_dir), dict(report, notes=["second run"]), unlabeled)
    assert set(figures) == {"samples", "novelty_hist", "closest_pairs"}
    assert sorted(os.listdir(report_dir / "figures")) == sorted(f"{n}.png" for n in figures)
    assert json.loads((report_dir / "report.json").read_text())["notes"] == ["second run"]
    assert len(_sources((report_dir / "report.html").read_text())) == 3
