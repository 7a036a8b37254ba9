"""The on-disk names and the one manifest reader/writer."""
import json

import pytest

from pipeline.dataset import layout
from vae_model.errors import DataError

GOOD = {"shards": [{"path": "parquet/part-00000-of-00001.parquet", "format": "parquet", "rows": 3}],
        "height": 28, "width": 28, "total": 3}


def write(tmp_path, manifest) -> str:
    (tmp_path / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return str(tmp_path)


def test_write_manifest_then_read_manifest_round_trips(tmp_path):
    layout.write_manifest(str(tmp_path), GOOD)
    assert layout.read_manifest(str(tmp_path)) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


@pytest.mark.parametrize("manifest, problem", [
    ([GOOD], "a JSON list, not an object"),
    ({**GOOD, "height": None}, "'height' must be a positive integer"),
    ({k: v for k, v in GOOD.items() if k != "height"}, "'height' must be a positive integer"),
    ({**GOOD, "width": 0}, "'width' must be a positive integer"),
    ({**GOOD, "width": True}, "'width' must be a positive integer"),
    ({**GOOD, "shards": {"path": "p"}}, "'shards' must be a list of {path, format, rows}"),
    ({**GOOD, "shards": [{"path": "p", "format": "parquet"}]}, "'shards' must be a list of {path, format, rows}"),
])
def test_read_manifest_rejects_a_malformed_manifest_in_one_line(tmp_path, manifest, problem):
    out = write(tmp_path, manifest)
    with pytest.raises(DataError) as e:
        layout.read_manifest(out)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'manifest.json'}: not a valid manifest (") and problem in message
    assert message.endswith("re-run generate to rewrite the output") and "\n" not in message


def test_read_manifest_rejects_broken_json_and_a_missing_manifest(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path} has no manifest.json: it is not a finished"):
        layout.read_manifest(str(tmp_path))
    with pytest.raises(DataError, match="does not exist, so it has no manifest.json"):
        layout.read_manifest(str(tmp_path / "nowhere"))
    write(tmp_path, '{"shards": [')
    with pytest.raises(DataError, match=r"manifest.json: not valid JSON \(.*\); re-run generate"):
        layout.read_manifest(str(tmp_path))


@pytest.mark.parametrize("path, folder", [
    ("out", "out"), ("out/manifest.json", "out"), ("/a/b/manifest.json", "/a/b"), ("manifest.json", "."),
    ("gs://bucket/run/manifest.json", "gs://bucket/run"), ("gs://bucket/run", "gs://bucket/run"),
    ("out/not-a-manifest.json", "out/not-a-manifest.json"),
])
def test_locate_manifest_accepts_the_folder_or_its_manifest(path, folder):
    assert layout.locate_manifest(path) == (folder, layout.join(folder, "manifest.json"))


def test_shard_names_match_the_shard_pattern(tmp_path):
    import fnmatch
    name = layout.shard_name(layout.FILE_PREFIX, 3, 16, layout.SUFFIX["tfrecord"])
    assert name == "part-00003-of-00016.tfrecord"
    path = layout.join(layout.shard_dir(str(tmp_path), "tfrecord"), name)
    assert fnmatch.fnmatch(path, layout.shard_pattern(str(tmp_path), "tfrecord", 16))
    assert not fnmatch.fnmatch(path, layout.shard_pattern(str(tmp_path), "tfrecord", 15))
    assert layout.shard_number(path) == 3 and layout.relative(path, str(tmp_path)) == "tfrecord/" + name


def test_shard_stats_round_trip_and_skip_missing_dirs_and_cut_files(tmp_path):
    assert layout.read_shard_stats(str(tmp_path / "none")) == []
    stats = {"format": "parquet", "shard": 1, "num_shards": 2, "rows": 5, "bytes": 99, "sha256": "ab"}
    layout.write_shard_stats(str(tmp_path), stats)
    layout.write_shard_stats(str(tmp_path), stats)  # a replayed bundle adds a file, it does not overwrite one
    (tmp_path / "parquet-00000-of-00002-cut.json").write_text('{"format": "par')
    assert layout.read_shard_stats(str(tmp_path)) == [stats, stats]


def test_list_entries_lists_files_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "f").write_text("x")
    assert layout.list_entries(str(tmp_path)) == [str(tmp_path / "empty"), str(tmp_path / "f")]
    assert layout.list_entries(str(tmp_path / "missing")) == []


def test_owner_fingerprint_prefers_the_manifest_then_the_job_marker(tmp_path):
    assert layout.owner_fingerprint(str(tmp_path)) is None
    layout.write_job_marker(str(tmp_path), "running")
    assert layout.owner_fingerprint(str(tmp_path)) == "running"
    write(tmp_path, {**GOOD, "fingerprint": "published"})
    assert layout.owner_fingerprint(str(tmp_path)) == "published"
    write(tmp_path, "[1, 2]")  # unreadable as a job's manifest: owner unknown
    assert layout.owner_fingerprint(str(tmp_path)) is None
