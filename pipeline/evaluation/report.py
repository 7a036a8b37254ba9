"""The evaluation report: report.json plus one self-contained report.html (inline CSS, every picture embedded as
a base64 PNG; nothing is loaded from elsewhere), and the PNG files themselves under figures/. The page leads with
the verdict (evaluate.TARGETS), then the sample grid, then the details; it names local paths relative to itself.

The directory is written atomically (vae_model.artifacts.atomic_directory): everything goes to a temporary
sibling, which replaces the old report only once complete, so a failure leaves the old report as it was.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re

import numpy as np

from vae_model import artifacts, plots

REPORT_JSON, REPORT_HTML, FIGURES = "report.json", "report.html", "figures"
GRID_PER_CLASS, WORST_PER_CLASS, SCATTER_POINTS = 12, 8, 5000


def _report_files(meta: dict):
    """report.json lists its figures; report.html is always beside it."""
    figures = meta["figures"]
    if not (isinstance(meta["dataset"], dict) and isinstance(meta["counts"], dict)
            and all(f.startswith(FIGURES + "/") for f in figures.values())):
        raise ValueError("not a report.json")
    return [REPORT_HTML, *figures.values()]


REPORT_DIR = artifacts.ArtifactKind("report", REPORT_JSON, "an earlier report", "--report", "evaluate",
                                    _report_files, (FIGURES,))


# ---------------------------------------------------------------------------------------------- JSON

def jsonable(obj):
    """numpy scalars/arrays -> Python; NaN/Inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------------------------- figures

# Figures are shown at their natural size, so a caption of CAPTION_PT points at DPI stays legible (>= 11 px).
DPI, CAPTION_PT, CELL_INCHES = 100, 9, 0.95


def _annotated_mosaic(images, rows, cols, captions, colors, title, path):
    """One imshow of the tiled images with a caption above each cell (fast: no subplot per image)."""
    import matplotlib.pyplot as plt

    h, w = images.shape[1:3]
    pad = max(3, round(h / 3))  # caption band above every row, in image pixels
    mosaic = np.zeros((rows * (h + pad), cols * w), np.uint8)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        mosaic[r * (h + pad) + pad:(r + 1) * (h + pad), c * w:(c + 1) * w] = img
    fig = plt.figure(figsize=(cols * CELL_INCHES + 0.4, rows * (h + pad) / w * CELL_INCHES + 0.6))
    ax = fig.add_axes([0, 0, 1, 0.94 if title else 1])
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    for i, (text, color) in enumerate(zip(captions, colors)):
        r, c = divmod(i, cols)
        ax.text(c * w + w / 2, r * (h + pad) + pad / 2, text, ha="center", va="center", fontsize=CAPTION_PT,
                color=color, fontweight="bold" if color != "black" else "normal",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _worst_grid(syn, fid, path) -> bool:
    p = fid.get("p_label")
    if p is None:
        return False
    classes = sorted(int(c) for c in np.unique(syn.labels) if c >= 0)
    h, w = syn.images.shape[1:3]
    cells, captions, colors = [], [], []
    for c in classes:
        idx = np.flatnonzero(syn.labels == c)
        idx = idx[np.argsort(p[idx], kind="stable")[:WORST_PER_CLASS]]
        for k in range(WORST_PER_CLASS):
            if k < len(idx):
                i = idx[k]
                cells.append(syn.images[i])
                captions.append(f"{c}\u2192{fid['pred'][i]} {p[i]:.2f}")
                colors.append("firebrick" if fid["pred"][i] != c else "black")
            else:
                cells.append(np.zeros((h, w), np.uint8))
                captions.append("")
                colors.append("black")
    _annotated_mosaic(np.stack(cells), len(classes), WORST_PER_CLASS, captions, colors,
                      "lowest p(intended label) per class: intended\u2192predicted p(intended)", path)
    return True


def _latent_scatter(syn, path) -> bool:
    if syn.latents.shape[1] == 0 or not len(syn.latents):
        return False
    n = min(SCATTER_POINTS, len(syn.latents))
    idx = np.sort(np.random.default_rng(17).choice(len(syn.latents), n, replace=False))
    plots.latent_class_panels(syn.latents[idx], syn.labels[idx], path,
                              title=f"latent codes of {n:,} synthetic records (Parquet `latent`)")
    return True


def _novelty_hist(nov, path):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7, 3.6))
    hi = max(nov["syn_d"].max(), nov["base_d"].max())
    bins = np.linspace(0, hi * 1.02 + 1e-9, 60)
    plt.hist(nov["base_d"], bins=bins, alpha=0.55, density=True, label="real test \u2192 real train (baseline)")
    plt.hist(nov["syn_d"], bins=bins, alpha=0.55, density=True, label="synthetic \u2192 real train")
    plt.axvline(nov["threshold"], color="k", ls="--", lw=1, label=f"near-duplicate threshold {nov['threshold']:.2f}")
    plt.xlabel("nearest-neighbour L2 distance (pixels in [0, 1])")
    plt.ylabel("density")
    plt.legend(fontsize=8)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _closest_pairs(nov, path):
    syn_imgs, real_imgs, dists, _ = nov["closest"]
    n = len(dists)
    captions = [f"d={d:.2f}" for d in dists] + ["real NN"] * n
    _annotated_mosaic(np.concatenate([syn_imgs, real_imgs]), 2, n, captions, ["black"] * (2 * n),
                      "closest synthetic images (top) and their nearest real training image (bottom)", path)


def draw_figures(fig_dir: str, pictures: dict) -> dict[str, str]:
    """Draw every figure into fig_dir; returns {name: file name}."""
    os.makedirs(fig_dir, exist_ok=True)
    syn, fid, nov = pictures["syn"], pictures["fidelity"], pictures["novelty"]
    made = {}

    def out(name):
        made[name] = f"{name}.png"
        return os.path.join(fig_dir, made[name])

    plots.class_grid(syn.images, syn.labels, GRID_PER_CLASS, out("samples"), "a row per class: ")
    if not _worst_grid(syn, fid, out("worst_fidelity")):
        made.pop("worst_fidelity")
    if not _latent_scatter(syn, out("latent_scatter")):
        made.pop("latent_scatter")
    _novelty_hist(nov, out("novelty_hist"))
    _closest_pairs(nov, out("closest_pairs"))
    return made


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.na{color:#999;font-style:italic}.bad{color:#b00}
.big{font-size:1.25em;font-weight:600}.note{background:#fff8e1;border-left:4px solid #f0c000;padding:.4em .8em}
img{max-width:100%;image-rendering:pixelated;border:1px solid #eee}code{background:#f4f4f4;padding:0 .2em}
#verdict{border:2px solid;border-radius:6px;padding:.6em 1em}#verdict.pass{border-color:#2e7d32;background:#f1f8f1}
#verdict.fail{border-color:#b00;background:#fdf1f1}.badge{font-size:1.8em;font-weight:700;margin-right:.4em}
.pass .badge,td.pass{color:#2e7d32}.fail .badge,td.fail{color:#b00}td.fail,td.pass{font-weight:600}
nav{margin-top:1em}nav ol{columns:3;margin:.4em 0}
"""

SECTIONS = (("samples", "Samples"), ("summary", "Summary"), ("counts", "Counts"), ("fidelity", "Label fidelity"),
            ("cas", "Classification Accuracy Score (CAS)"),
            ("novelty", "Novelty (distance to closest real training record)"), ("diversity", "Diversity"),
            ("latent", "Latent codes"), ("provenance", "Provenance"))


def _e(x) -> str:
    return html.escape(str(x))


def _pct(x) -> str:
    return "\u2013" if x is None else f"{100 * x:.2f}%"


def _num(x, digits=3) -> str:
    return "\u2013" if x is None else f"{x:.{digits}f}"


def _table(header, rows, left=1) -> str:
    head = "".join(f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(figures: dict, name: str, alt: str) -> str:
    if name not in figures:
        return ""
    b64 = base64.b64encode(figures[name]).decode("ascii")
    return f"<p><img alt='{_e(alt)}' src='data:image/png;base64,{b64}'></p>"


def _na(section: dict) -> str:
    return f"<p class='na'>Not applicable: {_e(section.get('reason', ''))}</p>"


def shown_path(path: str | None, report_dir: str | None) -> str | None:
    """A local path relative to the report directory (remote URLs as they are), so the page names no home
    directories and its names still resolve when the report and the data move together."""
    if not path or "://" in path or report_dir is None:
        return path
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(report_dir))
    except ValueError:  # another drive on Windows
        return os.path.basename(os.path.normpath(path))


def _source_name(source: str, report_dir: str | None) -> str:
    """A data source is a name ("mnist?limit=2000") or a path; only an absolute path is rewritten."""
    return shown_path(source, report_dir) if os.path.isabs(source) else source


def _classifier_name(clf: dict, report_dir: str | None) -> str:
    if clf.get("bundled"):
        return "bundled"
    where = shown_path(clf.get("path"), report_dir)
    return f"{clf['classifier_id']} ({where})" if clf.get("classifier_id") else str(where)


def _target_value(unit: str, x) -> str:
    if x is None:
        return "\u2013"
    if unit == "share":
        return _pct(x)
    if unit == "check":
        return "yes" if x else "no"
    return f"{x:,}"


_OPS = {">=": "\u2265", "<=": "\u2264", "==": "="}


def _verdict_html(v: dict, cas: dict) -> str:
    rows = []
    for t in v["targets"]:
        threshold = _target_value(t["unit"], t["threshold"])
        if t.get("threshold_from"):
            threshold = f"{t['threshold_from']} {threshold}"
        value = _target_value(t["unit"], t["value"])
        if t["name"] == "cas" and cas.get("applicable"):
            value += f" (ceiling {_pct(cas['ceiling'])})"
        result = (f"<td class='na'>n/a: {_e(t['reason'])}</td>" if t["status"] == "n/a"
                  else f"<td class='{t['status']}'>{t['status'].upper()}</td>")
        rows.append(f"<tr><td class='l'>{_e(t['what'])}</td><td>{_OPS[t['op']]} {_e(threshold)}</td>"
                    f"<td>{_e(value)}</td>{result}</tr>")
    n_na = sum(t["status"] == "n/a" for t in v["targets"])
    status = v["status"]
    sentence = v["advice"] or ("Every target measured here is met" + (f"; {n_na} were not measured or do not apply."
                                                                      if n_na else "."))
    sentence = re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(sentence))  # the flags to use, as code
    return (f"<section id='verdict' class='{status}'><p><span class='badge'>{status.upper()}</span>"
            f"<span class='big'>{sentence}</span></p>"
            "<table><tr><th class='l'>target</th><th>threshold</th><th>measured</th><th>result</th></tr>"
            + "".join(rows) + f"</table><p>Targets from {_e(v['source'])}.</p></section>")


def _toc() -> str:
    items = "".join(f"<li><a href='#{key}'>{_e(title)}</a></li>" for key, title in SECTIONS)
    return f"<nav><b>Contents</b><ol>{items}</ol></nav>"


def render_html(report: dict, figures: dict[str, bytes], report_dir: str | None = None) -> str:
    """The report as one HTML string; `figures` maps names to PNG bytes (embedded as data: URIs). Local paths are
    shown relative to `report_dir` when given. Order: verdict, sample grid, then the details."""
    d, c, f, cas, nov, div = (report[k] for k in ("dataset", "counts", "fidelity", "cas", "novelty", "diversity"))
    name = shown_path(d["out_dir"], report_dir)
    h2 = dict(SECTIONS)

    def section(key):
        parts.append(f"<h2 id='{key}'>{_e(h2[key])}</h2>")

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vae-augment evaluation: "
             f"{_e(name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Evaluation of <code>{_e(name)}</code></h1>", _verdict_html(report["verdict"], cas)]
    for n in report.get("notes", []):
        parts.append(f"<p class='note'>{_e(n)}</p>")
    parts.append(_toc())
    section("samples")
    parts.append(_img(figures, "samples", "samples per class"))
    # summary
    section("summary")
    filt = d.get("filter")
    summary = [("records", f"{d['total']:,}"), ("sampler", d.get("sampler")), ("generator model id", d.get("model_id")),
               ("filter", f"p \u2265 {filt['min_confidence']} by classifier {filt.get('classifier_id')} (acceptance "
                          f"{_pct(filt.get('acceptance'))})" if filt else "none"),
               ("real data", _source_name(report["real"]["source"], report_dir)),
               ("reference classifier", _classifier_name(report["classifier"], report_dir)),
               ("label fidelity", _pct(f.get("fidelity")) if f.get("applicable") else "n/a"),
               ("CAS / ceiling", f"{_pct(cas['cas'])} / {_pct(cas['ceiling'])}" if cas.get("applicable") else "n/a"),
               ("exact duplicates of real training images", f"{nov['exact_duplicates']:,}"),
               ("near-duplicate rate (baseline)", f"{_pct(nov['near_duplicate_rate'])} "
                                                  f"({_pct(nov['baseline_near_duplicate_rate'])})"),
               ("within-class diversity, synthetic / real", f"{_num(div.get('mean_ratio'))}"
                if div.get("applicable") else f"pooled {_num(div['pooled'].get('ratio'))}")]
    parts.append(_table(["summary", ""], [(_e(k), _e(v)) for k, v in summary], left=2))
    # counts
    section("counts")
    classes = sorted(set(c["per_class"]) | set(c["manifest_per_class"]), key=int)
    rows = [(_e("unlabeled" if k == "-1" else k), f"{c['per_class'].get(k, 0):,}",
             f"{c['manifest_per_class'].get(k, 0):,}") for k in classes]
    rows.append(("<b>total</b>", f"<b>{c['total']:,}</b>", f"<b>{c['manifest_total']:,}</b>"))
    parts.append(f"<p>Read from the {_e(c['read_from'])} shards. "
                 + ("They match the manifest." if c["match"] else "<span class='bad'>They do not match the "
                    "manifest: " + _e("; ".join(c["problems"])) + "</span>") + "</p>")
    parts.append(_table(["class", "in shards", "in manifest"], rows))
    # fidelity
    section("fidelity")
    parts.append(f"<p>The reference classifier scores {_pct(f['classifier_accuracy_on_real_test'])} on "
                 f"{f['real_test_images']:,} real test images.</p>")
    if f.get("applicable"):
        parts.append(f"<p class='big'>{_pct(f['fidelity'])} of {f['images']:,} synthetic images are classified as "
                     f"their intended label (mean p(label) {_num(f['mean_prob_label'])}, mean confidence "
                     f"{_num(f['mean_confidence'])}).</p>")
        rows = [(_e(k), f"{v['images']:,}", _pct(v["fidelity"]), _num(v["mean_prob_label"]),
                 _num(v["mean_confidence"])) for k, v in f["per_class"].items()]
        parts.append(_table(["class", "images", "fidelity", "mean p(label)", "mean confidence"], rows))
        conf = np.array(f["confusion"]["rows_intended_cols_predicted"])
        keep = [int(k) for k in f["per_class"]]
        rows = [(_e(k), *[f"{conf[k, j]:,}" for j in range(conf.shape[1])]) for k in keep]
        parts.append("<p>Confusion (rows: intended label, columns: predicted):</p>")
        parts.append(_table(["intended \\ predicted", *map(str, range(conf.shape[1]))], rows))
        if "worst_fidelity" in figures:
            parts.append("<p>The lowest p(intended label) of each class, captioned intended\u2192predicted "
                         "p(intended); red: the classifier predicts another class.</p>")
        parts.append(_img(figures, "worst_fidelity", "lowest-fidelity examples per class"))
    else:
        parts.append(_na(f))
        if "predicted_class_share" in f:
            shares = f["predicted_class_share"]
            parts.append("<p>What the classifier sees in the unlabeled records (share predicted per class, mean "
                         f"confidence {_num(f['mean_confidence'])}):</p>")
            parts.append(_table(["class", *shares], [("share", *[_pct(v) for v in shares.values()])]))
    # CAS
    section("cas")
    if cas.get("applicable"):
        parts.append(f"<p class='big'>CAS {_pct(cas['cas'])} vs ceiling {_pct(cas['ceiling'])} "
                     f"(gap {100 * cas['gap']:.2f} points, ratio {_num(cas['ratio'])})</p>")
        parts.append(f"<p>A fresh classifier of the reference architecture was trained only on "
                     f"{cas['synthetic_rows']:,} synthetic records ({_e(cas['read_from'])}; {cas['epochs']} epochs, "
                     f"{cas['steps']:,} steps of {cas['batch_size']}, {cas['train_seconds']} s) and scored on "
                     f"{cas['test_images']:,} real test images. Ceiling: {_e(cas['ceiling_source'])} "
                     f"({cas.get('ceiling_steps')} steps).</p>")
        ceiling_steps = cas.get("ceiling_steps")
        if ceiling_steps and ceiling_steps != cas["steps"]:
            per_epoch = math.ceil(cas["synthetic_rows"] / cas["batch_size"])
            epochs = math.ceil(ceiling_steps / per_epoch)
            parts.append(f"<p>Both follow the same config (epochs over their own training set), so the CAS "
                         f"classifier took {cas['steps']:,} optimizer steps and the ceiling {ceiling_steps:,}. For an "
                         f"equal budget cap both: <code>--cas-epochs {epochs} --cas-max-steps {ceiling_steps}</code> "
                         "(the ceiling is then trained again with the same cap).</p>")
        if cas.get("note"):
            parts.append(f"<p class='note'>{_e(cas['note'])}</p>")
    else:
        parts.append(_na(cas))
    # novelty
    section("novelty")
    parts.append(f"<p>{_e(nov['units'])}; reference: {_e(nov['reference'])}; exact L2 (float64 on integer "
                 f"pixels). {nov['synthetic_queries']:,} synthetic images and, as the baseline, "
                 f"{nov['baseline_queries']:,} real test images.</p>")
    parts.append(_table(["", "synthetic", "baseline"], [
        ("exact duplicates of real training images", f"{nov['exact_duplicates']:,} "
         f"({_e(nov['exact_duplicates_scope'])})", "\u2013"),
        ("identical images repeated within the synthetic set", f"{nov['repeated_synthetic_images']:,}", "\u2013"),
        ("exact duplicates among the queries (distance 0)", f"{nov['exact_duplicates_in_queries']:,}", "\u2013"),
        (f"near-duplicate rate (distance &lt; {nov['near_duplicate_threshold']:.3f})",
         _pct(nov["near_duplicate_rate"]), _pct(nov["baseline_near_duplicate_rate"]))]))
    parts.append(f"<p>Near-duplicate threshold: {_e(nov['near_duplicate_threshold_rule'])}. Pixel L2 favours "
                 "smooth, average-looking digits (as a VAE decodes them): a synthetic set can sit slightly closer to "
                 "the training set than real test digits without copying any of them; the closest pairs below show "
                 "whether they are copies.</p>")
    qs = [k for k in nov["synthetic"]]
    parts.append(_table(["", *qs], [("synthetic", *[_num(nov["synthetic"][q]) for q in qs]),
                                    ("baseline", *[_num(nov["baseline"][q]) for q in qs])]))
    if nov.get("per_class"):
        parts.append("<p>Per class (the baseline are the real test images of that class; simple classes such as 1 "
                     "sit closer to their neighbours):</p>")
        rows = [(_e(k), _num(v["synthetic_median"]), _num(v["baseline_median"]), _pct(v["near_duplicate_rate"]),
                 _pct(v["baseline_near_duplicate_rate"])) for k, v in nov["per_class"].items()]
        parts.append(_table(["class", "median synthetic", "median baseline", "near-dup rate synthetic",
                             "near-dup rate baseline"], rows))
    parts.append(_img(figures, "novelty_hist", "nearest-neighbour distance histogram"))
    parts.append(_img(figures, "closest_pairs", "closest synthetic/real pairs"))
    # diversity
    section("diversity")
    parts.append(f"<p>{_e(div['units'])}, at most {div['per_class_limit']} images per class (pooled: twice as "
                 "many, ignoring labels). Ratio below 1: the synthetic digits vary less than real ones.</p>")
    rows = []
    if div.get("applicable"):
        rows = [(_e(k), _num(v["synthetic"]), _num(v["real"]), _num(v["ratio"])) for k, v in div["per_class"].items()]
        rows.append(("<b>mean over classes</b>", _num(div["synthetic_mean"]), _num(div["real_mean"]),
                     _num(div["mean_ratio"])))
    p = div["pooled"]
    rows.append(("pooled", _num(p["synthetic"]), _num(p["real"]), _num(p["ratio"])))
    parts.append(_table(["class", "synthetic", "real", "ratio"], rows))
    if not div.get("applicable"):
        parts.append(_na(div))
    # latent codes
    section("latent")
    if "latent_scatter" in figures:
        parts.append("<p>One panel per class: that class in colour, every other code in grey. With three or more "
                     "classes the axes span the class means (a PCA of the means), since the leading PCA axes of "
                     "all codes mix the classes.</p>")
        parts.append(_img(figures, "latent_scatter", "latent codes per class"))
    else:
        parts.append("<p class='na'>The records carry no latent codes.</p>")
    # provenance
    section("provenance")
    prov = [("dataset command", d.get("command")), ("dataset digest", d.get("dataset_digest")),
            ("classifier command", report["classifier"].get("command")),
            ("classifier id", report["classifier"].get("classifier_id")),
            ("evaluate command", report.get("command")), ("created", report.get("created")),
            ("options", json.dumps(report.get("options"))), ("timings (s)", json.dumps(report.get("timings"))),
            ("versions", ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()))]
    parts.append(_table(["what", "value"], [(_e(k), f"<code>{_e(v)}</code>") for k, v in prov], left=2))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report_dir: str, report: dict, pictures: dict) -> dict[str, str]:
    """Draw the figures and write report.json, report.html and figures/ into report_dir atomically."""
    with artifacts.atomic_directory(report_dir, REPORT_DIR) as tmp:
        made = draw_figures(os.path.join(tmp, FIGURES), pictures)
        report["figures"] = {name: f"{FIGURES}/{fname}" for name, fname in made.items()}
        data = jsonable(report)
        with open(os.path.join(tmp, REPORT_JSON), "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
        figures = {}
        for name, fname in made.items():
            with open(os.path.join(tmp, FIGURES, fname), "rb") as f:
                figures[name] = f.read()
        with open(os.path.join(tmp, REPORT_HTML), "w", encoding="utf-8") as f:
            f.write(render_html(data, figures, report_dir))
    return report["figures"]
