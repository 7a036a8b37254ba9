"""report.json + report.html of an augment run: A's and B's test accuracy and the lift (when the source has a test
split), how B was chosen (validation only), what data/ is worth (CAS, label fidelity, from `evaluate`), the
pseudo-labels' coverage and precision (where the truth is known), each step's time, fingerprint and command,
and the digests. The page is self-contained: the evaluate report's pictures are embedded as base64 PNG."""
from __future__ import annotations

import base64
import html
import json
import os

REPORT_JSON, REPORT_HTML = "report.json", "report.html"
_PICTURES = ("samples", "worst_fidelity", "closest_pairs", "novelty_hist", "latent_scatter")


def build(job, total_seconds: float) -> dict:
    recs = {name: job.ledger.record(name) for name in job.records}
    score = recs["score"]["info"]
    pub = recs["publish"]["info"]
    steps = [{"step": n, "title": r["title"], "seconds": r["seconds"], "fingerprint": r["fingerprint"],
              "identity": r["identity"], "summary": r["info"].get("summary", "")} for n, r in recs.items()]
    gen = {n: r["info"] for n, r in recs.items() if n.endswith("/generate")}
    with open(job.path("data/manifest.json")) as f:
        manifest = json.load(f)
    return {
        "kind": "augment_report",
        "source": job.source, "seed": job.seed, "vae": job.vae_arg,
        "command": job.command, "config": job.aug.to_dict(),
        "classifier_architecture": "A and B are both the project's reference CNN (configs/classifier.yaml), "
                                   "trained alike on randomly shifted (up to "
                                   f"{job.aug.translate:.0%} of the side) and rotated (up to {job.aug.rotate:g} "
                                   "degrees) images; any gain of B over A comes from the data",
        "test": {k: score.get(k) for k in ("has_test", "test_images", "A_test", "B_test", "lift_points",
                                           "candidates_test")},
        "choice": {"rule": "highest validation accuracy; ties: augmented over real-only, then with the "
                           "pseudo-labeled real rows over shards alone, then the later round; another round while "
                           "the newest round's best is not beaten on validation (at most max_rounds)",
                   "chosen": pub["chosen"], "candidates": pub["candidates"]},
        "parts": parts(pub, score),
        "data": {"dataset_digest": manifest.get("dataset_digest"), "total": manifest.get("total"),
                 "per_class": manifest.get("per_class"), "rounds": gen, **score["evaluate"],
                 "fidelity_classifier": score["fidelity_classifier"]},
        "pseudo_labels": score["pseudo_labels"],
        "steps": steps,
        "seconds_this_run": total_seconds,
        "seconds_all_steps": round(sum(s["seconds"] for s in steps), 1),
    }


def parts(pub: dict, score: dict) -> list[dict]:
    """What the product's parts add on the test set in B's round, each over A (the real labels alone): the
    synthetic shards (round-N: pretrain, fine-tune) and the shards with the pseudo-labeled real rows
    (round-N+real). Scored after the choice."""
    tests = score.get("candidates_test") or {}
    r = pub["round"] or 1
    a = tests.get("real-only")
    rows = [("real labeled rows only (A)", "real-only"),
            ("+ synthetic shards (data/): pretrain, then fine-tune", f"round-{r}"),
            ("+ synthetic shards and pseudo-labeled real rows (data/ + pseudo_labels.npz), together",
             f"round-{r}+real")]
    return [{"part": what, "candidate": name, "test": tests.get(name),
             "over_A_points": None if a is None or tests.get(name) is None or name == "real-only"
             else 100 * (tests[name] - a)} for what, name in rows]


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def render(rep: dict, figures: dict[str, bytes]) -> str:
    e = html.escape
    t, d = rep["test"], rep["data"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>vae-augment augment</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;"
             "padding:3px 8px}table{border-collapse:collapse}code{font-size:90%}</style></head><body>",
             f"<h1>augment: {e(rep['source'])} (seed {rep['seed']})</h1>"]
    if t.get("has_test"):
        parts.append(f"<h2>A {_pct(t['A_test'])} &rarr; B {_pct(t['B_test'])} "
                     f"(lift {t['lift_points']:+.2f} points) on {t['test_images']:,} test images</h2>")
    else:
        parts.append("<h2>The source has no test split: no test accuracy</h2>")
    parts.append(f"<p>{e(rep['classifier_architecture'])}. The test split was read only by the final scoring "
                 "step, after every choice.</p>")
    if "samples" in figures:
        parts.append(_img(figures["samples"], "synthetic samples per class"))
    parts.append(f"<h3>How B was chosen (validation only)</h3><p>{e(rep['choice']['rule'])}. "
                 f"Chosen: <b>{e(rep['choice']['chosen'])}</b>.</p><table><tr><th>candidate</th>"
                 "<th>validation accuracy</th><th>test accuracy (scored after the choice)</th></tr>")
    for c in rep["choice"]["candidates"]:
        test = (t.get("candidates_test") or {}).get(c["name"])
        parts.append(f"<tr><td>{e(c['name'])}</td><td>{_pct(c['val_accuracy'])}</td><td>{_pct(test)}</td></tr>")
    parts.append("</table>")
    if t.get("has_test"):
        parts.append("<h3>Each part's contribution (test set, B's round)</h3><table><tr><th>trained on</th>"
                     "<th>candidate</th><th>test accuracy</th><th>points over A</th></tr>")
        for p in rep["parts"]:
            add = "" if p["over_A_points"] is None else f"{p['over_A_points']:+.2f}"
            parts.append(f"<tr><td>{e(p['part'])}</td><td>{e(p['candidate'])}</td><td>{_pct(p['test'])}</td>"
                         f"<td>{add}</td></tr>")
        parts.append("</table>")
    parts.append(f"<h3>data/: {d['total']:,} records, digest <code>{e(str(d['dataset_digest']))}</code></h3>"
                 f"<p>CAS {_pct(d.get('cas'))} (ceiling {_pct(d.get('cas_ceiling'))}), label fidelity "
                 f"{_pct(d.get('fidelity'))} by {e(d['fidelity_classifier'])}, exact duplicates "
                 f"{d.get('exact_duplicates')}, near-duplicate rate {_pct(d.get('near_duplicate_rate'))}. "
                 "Full evaluation: <a href='evaluation/report.html'>evaluation/report.html</a>.</p>")
    parts.append("<h3>Pseudo-labels</h3><table><tr><th>round</th><th>labeler (validation accuracy and log loss of each)</th>"
                 "<th>coverage</th><th>precision</th></tr>")
    for r, p in rep["pseudo_labels"].items():
        val = ", ".join(f"{n} {_pct(a['accuracy'])}, log loss {a['log_loss']:.3f}"
                        for n, a in (p.get("labeler_validation") or {}).items())
        parts.append(f"<tr><td>{r}</td><td>{e(str(p.get('labeler')))} ({e(val)})</td>"
                     f"<td>{_pct(p['coverage'])} ({p['labeled']:,} of {p['unlabeled']:,})</td>"
                     f"<td>{_pct(p.get('precision'))}</td></tr>")
    parts.append("</table><h3>Steps</h3><table><tr><th>step</th><th>what</th><th>seconds</th><th>fingerprint</th>"
                 "<th>result</th></tr>")
    for s in rep["steps"]:
        parts.append(f"<tr><td>{e(s['step'])}</td><td>{e(s['title'])}</td><td>{s['seconds']}</td>"
                     f"<td><code>{s['fingerprint']}</code></td><td>{e(s['summary'])}</td></tr>")
    parts.append(f"</table><p>All steps: {rep['seconds_all_steps']} s. Command: <code>{e(rep['command'])}</code></p>")
    for name in _PICTURES[1:]:
        if name in figures:
            parts.append(_img(figures[name], name.replace("_", " ")))
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(png: bytes, alt: str) -> str:
    return (f"<figure><img alt='{html.escape(alt)}' style='max-width:100%' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'><figcaption>"
            f"{html.escape(alt)}</figcaption></figure>")


def write(job, out_json: str, out_html: str, total_seconds: float) -> dict:
    rep = build(job, total_seconds)
    figures = {}
    try:
        with open(job.path("evaluation/report.json")) as f:
            listed = json.load(f).get("figures", {})
        for name, rel in listed.items():
            with open(job.path(os.path.join("evaluation", rel)), "rb") as f:
                figures[name] = f.read()
    except (OSError, ValueError):
        pass
    with open(out_json, "w") as f:
        json.dump(rep, f, indent=1, default=float)
    with open(out_html, "w") as f:
        f.write(render(rep, figures))
    return {"summary": "report.html"}
