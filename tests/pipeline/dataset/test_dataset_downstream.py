"""An output as downstream users load it without our readers: Hugging Face `datasets` (ClassLabel, numpy images),
TensorFlow Datasets (`builder_from_directory`), pandas/pyarrow; the dataset card (front matter, ownership under
--overwrite) and its loading examples, run as written."""
import os
import re
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before `datasets` is imported: nothing may download
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from pipeline.dataset import card, layout, publish, tfds as tfds_meta  # noqa: E402
from pipeline.dataset.verify import verify_output  # noqa: E402
from pipeline.readers import load_dataframe, load_parquet, tfrecord_dataset  # noqa: E402
from vae_model.errors import UsageError  # noqa: E402

README = os.environ.get("VAE_AUGMENT_README_UNDER_TEST") or os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")


@pytest.fixture
def out(tmp_path, generated):
    """A private copy of the `generated` output (HF caches and TFDS must not share state between tests)."""
    shutil.copytree(generated[0], tmp_path / "o")
    return str(tmp_path / "o")


def hf_load(*args, cache, **kwargs):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets, datasets.load_dataset(*args, split="train", cache_dir=str(cache), **kwargs)


@pytest.mark.parametrize("how", ["data_dir", "card"])
def test_hugging_face_gives_class_labels_and_numpy_images(out, tmp_path, how):
    args = ("parquet",) if how == "data_dir" else (out,)
    kwargs = {"data_dir": os.path.join(out, "parquet")} if how == "data_dir" else {}
    datasets, ds = hf_load(*args, cache=tmp_path / "hf", **kwargs)
    manifest = layout.read_manifest(out)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names[:3] == ["0", "1", "2"]
    batch = ds.with_format("numpy")[:]
    images = batch["image"].view(np.uint8).reshape(-1, manifest["height"], manifest["width"])
    want_images, want_labels = load_parquet(out)
    order_got, order_want = np.argsort(batch["id"]), np.argsort(load_dataframe(out, columns=["id"])["id"].to_numpy())
    np.testing.assert_array_equal(images[order_got], want_images[order_want])
    np.testing.assert_array_equal(batch["label"][order_got], want_labels[order_want])
    assert images.dtype == np.uint8 and len(ds) == manifest["total"]


def test_tfds_builder_from_directory_reads_the_same_records(out):
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder_from_directory(out)
    manifest = layout.read_manifest(out)
    assert list(builder.info.splits) == ["train"]
    assert builder.info.splits["train"].num_examples == manifest["total"]
    got = {int(r["id"]): (int(r["label"]), r["image"].tobytes())
           for r in tfds.as_numpy(builder.as_dataset(split="train"))}
    want = {int(i): (int(y), x.tobytes()) for xs, ys, ids in tfrecord_dataset(out, batch_size=64, with_ids=True)
            .as_numpy_iterator() for x, y, i in zip(xs, ys, ids)}
    assert got == want


def test_tfds_metadata_needs_plain_shard_names():
    manifest = {"formats": ["tfrecord"], "height": 2, "width": 2, "per_class": {"0": 1}, "total": 1,
                "shards": [{"path": "tfrecord/part-00000-of-00001-ab12.tfrecord", "format": "tfrecord",
                            "rows": 1, "bytes": 9}]}
    assert tfds_meta.tfds_files(manifest) == {}
    manifest["shards"][0]["path"] = "tfrecord/part-00000-of-00001.tfrecord"
    assert set(tfds_meta.tfds_files(manifest)) == {tfds_meta.INFO_FILE, tfds_meta.FEATURES_FILE}


def test_the_card_front_matter_describes_the_output(out):
    text = open(os.path.join(out, card.CARD_FILE)).read()
    front = yaml.safe_load(text.split("---\n")[1])
    manifest = layout.read_manifest(out)
    info = front["dataset_info"]
    assert [f["name"] for f in info["features"]] == ["id", "label", "image", "latent", "sampler", "model_id", "seed"]
    assert info["splits"] == [{"name": "train", "num_examples": manifest["total"],
                               "num_bytes": sum(s["bytes"] for s in manifest["shards"] if s["format"] == "parquet")}]
    assert front["configs"][0]["data_files"][0]["split"] == "train"
    for c, n in manifest["per_class"].items():
        assert f"| {c} | {n:,} |" in text
    assert manifest["dataset_digest"] in text and "Not evaluated yet" in text


def test_the_card_shows_the_verdict_after_evaluate(out):
    manifest = layout.read_manifest(out)
    report = {"created": "2026-12-02T00:00:00Z", "verdict": {"status": "fail", "advice": "To meet the targets: x.",
              "targets": [{"what": "CAS", "value": 0.9, "threshold": 0.975, "op": ">=", "unit": "share",
                           "status": "fail"}]}}
    assert card.refresh(out, manifest, report, "../r/report.html")
    text = open(os.path.join(out, card.CARD_FILE)).read()
    assert "**Verdict: FAIL**" in text and "| CAS | 90.00% | >= 97.50% | fail |" in text
    open(os.path.join(out, card.CARD_FILE), "w").write("# my own notes\n")
    assert not card.refresh(out, manifest, report)  # a user's README is never replaced
    assert open(os.path.join(out, card.CARD_FILE)).read() == "# my own notes\n"


def test_verify_accepts_and_overwrite_removes_the_downstream_files(out):
    assert verify_output(out) == []
    assert set(card.FILES) <= set(os.listdir(out))
    publish.prepare(out, "another-job", overwrite=True)
    assert not set(card.FILES) & set(os.listdir(out))


@pytest.mark.parametrize("name", card.FILES)
def test_a_user_file_under_a_downstream_name_is_refused_and_kept(out, name):
    path = os.path.join(out, name)
    open(path, "w").write('{"mine": 1}\n')
    with pytest.raises(UsageError, match=re.escape(name)):
        publish.prepare(out, "another-job", overwrite=True)
    assert open(path).read() == '{"mine": 1}\n'


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def run_blocks(blocks, out, tmp_path):
    assert blocks
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path / "hf")
    for code in blocks:
        scope = {}
        code = code.replace("OUT_DIR", out).replace("out/demo", out)
        exec(compile(code, "<loading example>", "exec"), scope)  # noqa: S102
        for name in ("images", "df", "table", "ds"):
            assert name not in scope or scope[name] is not None


def test_the_cards_loading_examples_run_as_written(out, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    run_blocks(python_blocks(open(os.path.join(out, card.CARD_FILE)).read()), out, tmp_path)


@pytest.fixture
def out28(tmp_path, write_job_output, monkeypatch):
    """An output of 28x28 images, as the README's examples (written for out/demo) expect."""
    monkeypatch.setitem(write_job_output.__globals__, "H", 28)
    monkeypatch.setitem(write_job_output.__globals__, "W", 28)
    write_job_output(str(tmp_path / "o28"))
    return str(tmp_path / "o28")


@pytest.mark.e2e  # RunInference and the Beam user's example are whole Beam jobs
def test_the_readmes_downstream_examples_run_as_written(out28, tmp_path, monkeypatch):
    """README.md's blocks between `<!-- downstream-examples -->` and `<!-- /downstream-examples -->`."""
    pytest.importorskip("datasets")
    pytest.importorskip("tensorflow_datasets")
    text = open(README).read()
    m = re.search(r"^<!-- downstream-examples -->$(.*?)^<!-- /downstream-examples -->$", text, re.S | re.M)
    if not m:
        pytest.skip("README.md has no downstream-examples section yet")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)  # the Beam user's example writes out/mine
    run_blocks(python_blocks(m.group(1)), out28, tmp_path)
    if "out/mine" in m.group(1):
        from pipeline.dataset.verify import verify_output

        assert verify_output(str(tmp_path / "out" / "mine")) == []
