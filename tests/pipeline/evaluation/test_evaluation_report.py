"""report.json + report.html: JSON conversion, the HTML of a small report dict, and the atomic directory write."""
import base64
import html
import json
import os
import re

import numpy as np
import pytest

from pipeline.evaluation.evaluate import TARGETS, verdict_section
from pipeline.evaluation.report import (DPI, SECTIONS, _annotated_mosaic, _pct, jsonable, render_html,
                                       shown_path, write_report)
from vae_model import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _sources(page):
    """Everything the page would load: in-page links (#...) load nothing."""
    return re.findall(r"""\b(?:src|href)\s*=\s*['"]([^'"#][^'"]*)""", page)


def test_jsonable_turns_numpy_into_python_and_non_finite_into_null():
    data = jsonable({1: np.int64(3), "a": np.array([[1.5, np.nan]]), "b": (np.float32(2), np.bool_(True)),
                     "c": [float("inf"), "x", None]})
    assert data == {"1": 3, "a": [[1.5, None]], "b": [2.0, True], "c": [None, "x", None]}
    assert type(data["1"]) is int and type(data["b"][1]) is bool
    json.dumps(data, allow_nan=False)


def test_render_html_leads_with_the_verdict_then_the_samples_then_every_section(small_report):
    report, _ = small_report
    page = render_html(jsonable(report), {"samples": PNG + b"fake"})
    ids = re.findall(r"<h2 id='([a-z]+)'>", page)
    assert ids == [key for key, _ in SECTIONS]
    # the verdict comes before the table of contents, which comes before the sample grid and every detail
    assert page.index("id='verdict'") < page.index("<nav>") < page.index("<img") < page.index("id='summary'")
    assert re.findall(r"href='#([a-z]+)'", page) == ids
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


# ---------------------------------------------------------------------------------------------- verdict

def _meeting_every_target(report):
    """The report with every measured value on the passing side of its target."""
    r = json.loads(json.dumps(jsonable(report)))
    r["fidelity"]["fidelity"], r["cas"]["cas"] = 0.96, 0.976
    r["novelty"].update(exact_duplicates=0, near_duplicate_rate=0.003, baseline_near_duplicate_rate=0.01)
    return r


def _status(verdict):
    return {t["name"]: t["status"] for t in verdict["targets"]}


def test_a_report_meeting_every_target_passes_and_lists_each_target_with_threshold_and_value(small_report):
    r = _meeting_every_target(small_report[0])
    v = verdict_section(r)
    assert v["status"] == "pass" and v["advice"] is None
    assert [t["name"] for t in v["targets"]] == [t.name for t in TARGETS]
    by_name = {t["name"]: t for t in v["targets"]}
    assert by_name["label_fidelity"] == {"name": "label_fidelity", "what": TARGETS[1].what, "op": ">=",
                                         "threshold": 0.95, "unit": "share", "value": 0.96, "status": "pass"}
    # the near-duplicate target is measured against this report's own real baseline
    assert by_name["near_duplicate_rate"]["threshold"] == 0.01
    # unfiltered: the filtered output's stricter target does not apply, and says why
    assert by_name["label_fidelity_filtered"]["status"] == "n/a"
    assert by_name["label_fidelity_filtered"]["reason"] == "the output is not filtered"


@pytest.mark.parametrize("change,failing", [
    ({"fidelity": {"fidelity": 0.9499}}, "label_fidelity"),
    ({"cas": {"cas": 0.97}}, "cas"),
    ({"novelty": {"exact_duplicates": 1}}, "exact_duplicates"),
    ({"novelty": {"near_duplicate_rate": 0.0101}}, "near_duplicate_rate"),
    ({"counts": {"match": False}}, "counts_match"),
])
def test_each_target_missed_fails_the_verdict_and_says_what_to_do(small_report, change, failing):
    r = _meeting_every_target(small_report[0])
    for section, values in change.items():
        r[section].update(values)
    v = verdict_section(r)
    assert v["status"] == "fail"
    assert [name for name, status in _status(v).items() if status == "fail"] == [failing]
    fix = next(t.fix for t in TARGETS if t.name == failing)
    assert v["advice"] == f"To meet the targets: {fix}."


def test_thresholds_are_inclusive_and_several_misses_give_one_sentence(small_report):
    r = _meeting_every_target(small_report[0])
    r["fidelity"]["fidelity"], r["cas"]["cas"] = 0.95, 0.975
    r["novelty"]["near_duplicate_rate"] = r["novelty"]["baseline_near_duplicate_rate"]
    assert verdict_section(r)["status"] == "pass"
    r["fidelity"]["fidelity"], r["cas"]["cas"] = 0.9, 0.9
    v = verdict_section(r)
    fixes = [t.fix for t in TARGETS if t.name in ("label_fidelity", "cas")]
    assert v["status"] == "fail" and v["advice"] == "To meet the targets: " + "; ".join(fixes) + "."


def test_a_filtered_output_is_held_to_the_filtered_target(small_report):
    r = _meeting_every_target(small_report[0])
    r["dataset"]["filter"] = {"min_confidence": 0.9, "classifier_id": "c0", "acceptance": 0.9}
    v = verdict_section(r)  # 96% meets the unfiltered target, not the filtered one
    assert _status(v)["label_fidelity"] == "n/a" and _status(v)["label_fidelity_filtered"] == "fail"
    r["fidelity"]["fidelity"] = 0.995
    assert verdict_section(r)["status"] == "pass"


def test_targets_that_were_not_measured_do_not_fail_the_verdict_and_say_why(small_report):
    r = _meeting_every_target(small_report[0])
    r["cas"] = {"applicable": False, "reason": "skipped (cas_epochs = 0)"}
    r["fidelity"].update(applicable=False, reason="the records are unlabeled")
    v = verdict_section(r)
    assert v["status"] == "pass"
    reasons = {t["name"]: t.get("reason") for t in v["targets"]}
    assert reasons["cas"] == "skipped (cas_epochs = 0)" and reasons["label_fidelity"] == "the records are unlabeled"
    page = render_html(dict(r, verdict=v), {})
    assert "n/a: skipped (cas_epochs = 0)" in page and "3 were not measured or do not apply" in page


def test_the_page_shows_pass_or_fail_with_the_sentence_and_the_targets(small_report):
    report, _ = small_report
    page = render_html(jsonable(report), {})
    verdict = page[page.index("<section id='verdict'"):page.index("</section>")]
    assert "class='fail'" in verdict and ">FAIL<" in verdict
    # the advice sentence, its flags set as code
    advice = html.escape(report["verdict"]["advice"])
    assert "<code>--spread</code>" in verdict and re.sub("</?code>", "`", verdict).count(advice) == 1
    assert "\u2265 95.00%" in verdict and "93.33%" in verdict and "(ceiling 98.00%)" in verdict
    baseline = _pct(report["novelty"]["baseline_near_duplicate_rate"])
    assert f"\u2264 the real test baseline {baseline}" in verdict
    fails = sum(t["status"] == "fail" for t in report["verdict"]["targets"])
    assert fails and verdict.count("<td class='fail'>FAIL</td>") == fails
    passing = _meeting_every_target(report)
    page = render_html(dict(passing, verdict=verdict_section(passing)), {})
    assert "<section id='verdict' class='pass'>" in page and ">PASS<" in page and ">FAIL<" not in page


# ---------------------------------------------------------------------------------------------- names and pictures

def test_local_paths_are_shown_relative_to_the_report_and_the_bundled_classifier_by_name(tmp_path, small_report):
    report = jsonable(small_report[0])
    out, clf, rep = tmp_path / "data" / "out", tmp_path / "models" / "clf", tmp_path / "reports" / "r1"
    assert shown_path(str(out), str(rep)) == os.path.join("..", "..", "data", "out")
    assert shown_path("gs://bucket/out", str(rep)) == "gs://bucket/out"
    assert shown_path(str(out), None) == str(out)
    report["dataset"]["out_dir"] = str(out)
    report["classifier"].update(path=str(clf), bundled=False)
    page = render_html(report, {}, str(rep))
    assert str(tmp_path) not in page.split("id='provenance'")[0]
    assert f"c0 ({os.path.join('..', '..', 'models', 'clf')})" in page
    report["classifier"].update(bundled=True)
    assert "<td class='l'>bundled</td>" in render_html(report, {}, str(rep))


def test_captions_are_legible_and_fit_their_cell(monkeypatch):
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    images = np.zeros((16, 28, 28), np.uint8)
    _annotated_mosaic(images, 2, 8, ["9\u21927 0.00"] * 16, ["firebrick"] * 16, "title", os.devnull)
    (fig,) = drawn
    fig.set_dpi(DPI)  # the figure is shown at natural size: one PNG pixel per CSS pixel
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    cell = ax.transData.transform([[28, 0]])[0, 0] - ax.transData.transform([[0, 0]])[0, 0]
    captions = list(ax.texts)
    assert len(captions) == 16
    for t in captions:
        assert t.get_fontsize() * DPI / 72 >= 11 and t.get_window_extent(renderer).width < cell
    plt.close(fig)


def test_the_class_means_plane_separates_classes_that_pca_mixes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 200)
    z = rng.standard_normal((800, 6)) * [5, 5, 1, 1, 1, 1]  # two loud dimensions without class information
    z[:, 2] += np.array([-2, -2, 2, 2])[labels]
    z[:, 3] += np.array([-2, 2, -2, 2])[labels]

    def separation(xy):  # share of the projection's variance between the class means
        means = np.stack([xy[labels == c].mean(axis=0) for c in range(4)])[labels]
        return ((means - xy.mean(axis=0)) ** 2).sum() / ((xy - xy.mean(axis=0)) ** 2).sum()

    assert separation(plots.class_means_plane(z, labels)[0]) > 0.6 > 0.05 > separation(plots.project_2d(z)[0])
    # below three classes (or two dimensions) it is the plain projection
    two = labels < 2
    assert np.array_equal(plots.class_means_plane(z[two], labels[two])[0], plots.project_2d(z[two])[0])


def test_the_latent_picture_has_an_all_classes_panel_and_one_per_class(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    labels = np.array([-1] * 5 + [0] * 10 + [3] * 20 + [7] * 5 + [9] * 3)
    z = np.random.default_rng(1).standard_normal((43, 5))
    plots.latent_class_panels(z, labels, str(tmp_path / "l.png"), "t")
    axes = drawn[0].axes
    assert [ax.get_title() for ax in axes if ax.get_title()] == ["all classes", "class 0 (10)", "class 3 (20)",
                                                               "class 7 (5)", "class 9 (3)"]
    # the legend sits in the first spare cell, over no points
    (legend,) = [ax.get_legend() for ax in axes if ax.get_legend()]
    assert [t.get_text() for t in legend.get_texts()] == ["0", "3", "7", "9"] and legend.axes is axes[5]
    assert (tmp_path / "l.png").read_bytes()[:8] == PNG
    plt.close(drawn[0])
