"""`vae-augment augment` end to end on a tiny real subset: a Kaggle-style CSV of 20x20 digit crops with the labels
1, 4 and 7 only (other image size, a label set that is not 0..9), most label cells empty, and a test CSV.

Checks DIR's contents, that no test image reaches any step before the final scoring (the test split handed to
the job is a tripwire that records who touches it, and its images are marked so a leak shows in any file), and
resume: a second run skips every step; a corrupted or removed output reruns its step and what depends on it."""
import inspect
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli

CLASSES = (1, 4, 7)
TINY = ["--set", "labeler_steps=20", "--set", "pretrain_epochs=1", "--set", "finetune_steps=10", "--set", "selftrain_epochs=1",
        "--set", "max_rounds=1", "--set", "pool_per_class=100", "--set", "cas_epochs=0",
        "--set", "evaluate_max_images=150", "--set", "novelty_images=60", "--set", "baseline_images=60",
        "--per-class", "30"]
MARK = 255  # every test image has its top-left 4x4 corner at 255: no training crop does (digits sit centred)


def _csv(path, images, labels):
    with open(path, "w") as f:
        f.write("label," + ",".join(f"p{i}" for i in range(images[0].size)) + "\n")
        for x, y in zip(images, labels):
            f.write(("" if y < 0 else str(y)) + "," + ",".join(map(str, x.ravel())) + "\n")


@pytest.fixture(scope="module")
def source(tmp_path_factory, mnist_small):
    root = tmp_path_factory.mktemp("augsrc")
    tr, te = mnist_small.train, mnist_small.test
    pick = np.flatnonzero(np.isin(tr.labels, CLASSES))[:240]
    x = tr.images[pick, 4:24, 4:24]
    y = tr.labels[pick].copy()
    keep = np.zeros(len(y), bool)
    for c in CLASSES:
        keep[np.flatnonzero(y == c)[:8]] = True
    y[~keep] = -1
    assert (x[:, :4, :4] != MARK).any(axis=(1, 2)).all()
    tpick = np.flatnonzero(np.isin(te.labels, CLASSES))[:90]
    xt = te.images[tpick, 4:24, 4:24].copy()
    xt[:, :4, :4] = MARK
    _csv(root / "train.csv", x, y)
    _csv(root / "test.csv", xt, te.labels[tpick])
    vae_yaml = root / "vae.yaml"
    vae_yaml.write_text("model: {kind: dense, hidden: [32], latent_dim: 2}\ntrain: {epochs: 1, batch_size: 64}\n")
    return f"csv:{root / 'train.csv'}?test={root / 'test.csv'}", str(vae_yaml)


class Tripwire:
    """Stands in for the source's test split; records the call stack of every look at it."""
    def __init__(self, real):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "touched", [])

    def __getattr__(self, name):
        self.touched.append([f.function for f in inspect.stack()[1:12]])
        return getattr(self._real, name)

    def __len__(self):
        self.touched.append([f.function for f in inspect.stack()[1:12]])
        return len(self._real)


def _run(args):
    r = CliRunner().invoke(cli, ["augment", *args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def _status(output):
    """{step: 'done' | 'skipped'} from the progress lines."""
    out = {}
    for line in output.splitlines():
        if line.startswith("[") and "]" in line:
            name, _, rest = line.split("] ", 1)[1].partition(": ")
            if rest.startswith(("done", "skipped")):
                out[name] = rest.split()[0].rstrip(",")
    return out


@pytest.mark.e2e
def test_augment_end_to_end_never_sees_the_test_split_and_resumes(tmp_path, source, monkeypatch):
    from pipeline.augment import data as augment_data
    from vae_model.data import load_source

    src, vae_yaml = source
    wires = []

    def wired(s, **kw):
        splits = load_source(s, **kw)
        if splits.test is None:
            return splits
        wires.append(Tripwire(splits.test))
        return type(splits)(splits.source, splits.train, wires[-1], splits.val, splits.origin)

    monkeypatch.setattr(augment_data, "load_source", wired)
    out = tmp_path / "aug"
    args = ["--data", src, "--out", str(out), "--seed", "3", "--config", vae_yaml.replace("vae.yaml", "aug.yaml"),
            *TINY]
    with open(vae_yaml.replace("vae.yaml", "aug.yaml"), "w") as f:
        f.write(f"vae_config: {vae_yaml}\n")
    first = _run(args)
    steps = _status(first)
    assert set(steps.values()) == {"done"} and {"ingest", "vae", "labeler", "r1/generate", "r1/finetune",
                                                "r1/selftrain", "publish", "score", "report"} <= set(steps), first

    # DIR holds the product and the proof
    for rel in ("vae/model.json", "labeler/classifier.json", "classifier/classifier.json", "pseudo_labels.npz",
                "data/manifest.json", "report.html", "report.json", "evaluation/report.html"):
        assert (out / rel).is_file(), rel
    from pipeline.dataset.verify import verify_output
    assert verify_output(str(out / "data")) == []
    rep = json.loads((out / "report.json").read_text())
    t = rep["test"]
    assert t["has_test"] and t["test_images"] == 90 and 0 <= t["A_test"] <= 1 and 0 <= t["B_test"] <= 1
    assert abs(t["lift_points"] - 100 * (t["B_test"] - t["A_test"])) < 1e-9
    assert set(rep["data"]["per_class"]) == {str(c) for c in CLASSES}
    assert {s["step"] for s in rep["steps"]} >= {"ingest", "vae", "score"} and rep["command"]
    # both B candidates of the round were scored, and the parts' contributions are each candidate minus A
    assert set(t["candidates_test"]) == {"real-only", "round-1", "round-1+real"}
    assert rep["choice"]["chosen"] in t["candidates_test"]
    assert abs(t["candidates_test"][rep["choice"]["chosen"]] - t["B_test"]) < 1e-12
    by = {p["candidate"]: p for p in rep["parts"]}
    assert set(by) == set(t["candidates_test"])
    for name in ("round-1", "round-1+real"):
        assert abs(by[name]["over_A_points"] - 100 * (t["candidates_test"][name] - t["A_test"])) < 1e-9
    selftrain = json.loads((out / "rounds/r1/classifier_real/classifier.json").read_text())
    assert selftrain["rows"] > 30 * len(CLASSES)  # the shards and the pseudo-labeled real rows together
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "lift" in html and "contribution" in html

    # the test split: looked at only by the final scoring step ...
    assert wires and all(any(f == "score" for f in stack) for w in wires for stack in w.touched)
    assert any(w.touched for w in wires)
    # ... and no marked (test) image in any file a step wrote before it
    for rel in ("input/train.npz", "splits/pool.npz", "splits/labeled.npz", "splits/val.npz", "pseudo_labels.npz"):
        with np.load(out / rel) as z:
            assert "x_test" not in z.files, rel
            assert not (z["x_train"][:, :4, :4] == MARK).all(axis=(1, 2)).any(), rel
    for meta in ("vae/model.json", "labeler/classifier.json", "classifier/classifier.json"):
        splits = json.loads((out / meta).read_text())["data"]["splits"]
        assert "test" not in splits, meta
    assert json.loads((out / "vae/model.json").read_text())["data"]["splits"]["train"]["rows"] == 240

    # resume: nothing to do
    again = _status(_run(args))
    assert set(again.values()) == {"skipped"} and again.keys() == steps.keys()

    # a corrupted product file: its step reruns; same bytes again, so what read it is still valid
    with open(out / "pseudo_labels.npz", "ab") as f:
        f.write(b"x")
    os.remove(out / "report.html")
    third = _status(_run(args))
    assert third["publish"] == "done" and third["report"] == "done" and third["score"] == "skipped", third
    assert third["r1/generate"] == "skipped"

    # a removed intermediate output: its step and every step after it that read it rerun
    import shutil
    shutil.rmtree(out / "rounds" / "r1" / "pretrain")
    fourth = _status(_run(args))
    assert fourth["r1/pretrain"] == "done" and fourth["r1/finetune"] == "done"
    assert fourth["r1/selftrain"] == "skipped"  # it never read the pretrained weights
    assert fourth["r1/generate"] == "skipped" and fourth["labeler"] == "skipped"
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
