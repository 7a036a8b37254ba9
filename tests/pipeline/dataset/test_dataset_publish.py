"""The output directory's life cycle: prepare refuses another job's data, finalize publishes a manifest only when
summary and shards agree with the plan, and trusts the sinks' shard stats only when they are consistent."""
import hashlib
import json
import os

import pytest

from pipeline.dataset import layout
from pipeline.dataset import publish as outdir
from vae_model.errors import DataError, UsageError


def test_finalize_publishes_stats_or_read_back_hashes_that_match_the_files(generated):
    out, manifest = generated
    assert manifest == layout.read_manifest(out)  # what finalize returned is what it published
    assert (manifest["total"], manifest["num_shards"], manifest["formats"]) == (300, 2, ["parquet", "tfrecord"])
    assert [s["path"] for s in manifest["shards"]] == [
        f"{fmt}/part-0000{i}-of-00002.{fmt}" for fmt in ("parquet", "tfrecord") for i in range(2)]
    for s in manifest["shards"]:  # parquet entries come from the sinks' stats, tfrecord ones from reading back
        data = open(os.path.join(out, s["path"]), "rb").read()
        assert (s["bytes"], s["sha256"], s["rows"]) == (len(data), hashlib.sha256(data).hexdigest(), 150)
    assert not os.path.exists(layout.summary_dir(out))  # the job's scratch files are gone


def test_finalize_refuses_a_summary_that_disagrees_with_the_plan(tmp_path, write_job_output):
    out = str(tmp_path / "o")
    write_job_output(out, finalize=False)
    with open(layout.summary_prefix(out), "w") as f:  # what a job with a lost record would have summed
        json.dump({"total": 299, "per_class": {"0": 99, "1": 100, "2": 100}, "digest": "0" * 64}, f)
    with pytest.raises(DataError, match="job produced 299 records .* nothing was published"):
        outdir.finalize(out, ["parquet"], 2, {0: 100, 1: 100, 2: 100}, {"elapsed_seconds": 1})
    assert not os.path.exists(layout.manifest_path(out)) and not os.path.exists(layout.shard_dir(out, "parquet"))


def test_prepare_refuses_another_jobs_output_but_lets_the_same_job_rerun(damaged, job_fingerprint):
    out = str(damaged)
    with pytest.raises(UsageError, match="already holds another job's manifest or shards; pass --overwrite"):
        outdir.prepare(out, "another-job", overwrite=False)
    assert os.path.exists(layout.manifest_path(out))  # refused: nothing touched
    outdir.prepare(out, job_fingerprint, overwrite=False)
    assert not os.path.exists(layout.manifest_path(out)) and not os.path.exists(layout.shard_dir(out, "tfrecord"))
    assert layout.owner_fingerprint(out) == job_fingerprint  # the job marker now names the running job
    outdir.prepare(out, "another-job", overwrite=True)  # nothing left but the marker: allowed
    assert layout.owner_fingerprint(out) == "another-job"


def test_prepare_refuses_a_file_as_output(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        outdir.prepare(str(tmp_path / "f"), "fp", overwrite=True)


def test_abandon_and_remove_temp_leftovers_clear_partial_files(damaged):
    out = str(damaged)
    temp = os.path.join(layout.shard_dir(out, "parquet"), ".temp-parquet-123")
    os.makedirs(temp)
    assert outdir.remove_temp_leftovers(out) == [temp] and not os.path.exists(temp)
    outdir.abandon(out)
    assert sorted(os.listdir(out)) == [layout.JOB_MARKER]


def test_shard_info_of_a_truncated_tfrecord_is_one_line(damaged):
    shard = sorted((damaged / "tfrecord").glob("*.tfrecord"))[0]
    shard.write_bytes(shard.read_bytes()[:5])
    with pytest.raises(DataError, match=f"{shard.name}: unreadable tfrecord shard .*truncated TFRecord header"):
        outdir.shard_info(str(shard), "tfrecord", str(damaged))


def _fake_out(tmp_path, stats):
    out = tmp_path / "o"
    (out / "parquet").mkdir(parents=True)
    paths = []
    for shard in range(2):
        p = out / "parquet" / f"part-{shard:05d}-of-00002.parquet"
        p.write_bytes(b"x" * (10 + shard))
        paths.append(p)
    stats_dir = out / layout.SUMMARY_DIR / "shards"
    stats_dir.mkdir(parents=True)
    for i, s in enumerate(stats):
        (stats_dir / f"{i}.json").write_text(json.dumps(s))
    return str(out), paths


def _stat(shard, nbytes, sha, rows=3):
    return {"format": "parquet", "shard": shard, "num_shards": 2, "rows": rows, "bytes": nbytes, "sha256": sha}


def test_finalize_entries_trust_only_consistent_stats(tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(outdir, "shard_info", lambda path, fmt, out: read.append(os.path.basename(path)) or
                        {"path": path, "format": fmt, "rows": -1, "bytes": -1, "sha256": "read"})
    out, paths = _fake_out(tmp_path, [_stat(0, 10, "a"), _stat(0, 10, "a"),  # identical replay: fine
                                      _stat(1, 11, "b"), _stat(1, 11, "c")])  # disagreeing: read the file
    entries = outdir._shard_entries(out, ["parquet"], 2)
    assert entries[0] == {"path": "parquet/part-00000-of-00002.parquet", "format": "parquet", "rows": 3,
                          "bytes": 10, "sha256": "a"}
    assert entries[1]["sha256"] == "read" and read == ["part-00001-of-00002.parquet"]


def test_finalize_entries_read_the_file_when_sizes_differ_or_stats_are_missing(tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(outdir, "shard_info", lambda path, fmt, out: read.append(os.path.basename(path)) or
                        {"path": path, "format": fmt, "rows": 0, "bytes": 0, "sha256": "read"})
    out, _ = _fake_out(tmp_path, [_stat(0, 99, "a")])  # size differs from the file's 10 bytes; shard 1 has none
    entries = outdir._shard_entries(out, ["parquet"], 2)
    assert [e["sha256"] for e in entries] == ["read", "read"]
    assert sorted(read) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]


