"""The on-disk names and the one manifest reader/writer."""
import json
import os

import pytest

from pipeline.dataset import layout
from vae_model.errors import DataError

SHARD = {"path": "parquet/part-00000-of-00001.parquet", "format": "parquet", "rows": 3, "bytes": 10, "sha256": "a" * 64}
GOOD = {"format_version": 1, "total": 3, "per_class": {"0": 1, "1": 2}, "dataset_digest": "0" * 64,
        "formats": ["parquet"], "shards": [SHARD], "height": 28, "width": 28}


def write(tmp_path, manifest) -> str:
    (tmp_path / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return str(tmp_path)


def test_write_manifest_then_read_manifest_round_trips(tmp_path):
    layout.write_manifest(str(tmp_path), GOOD)
    assert layout.read_manifest(str(tmp_path)) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def shard(**change):
    return {**GOOD, "shards": [{**SHARD, **change}]}


@pytest.mark.parametrize("manifest, problem", [
    ([GOOD], "a JSON list, not an object"),
    ("7", "a JSON int, not an object"),
    ({**GOOD, "height": None}, "'height' must be a positive integer"),
    ({k: v for k, v in GOOD.items() if k != "height"}, "'height' is missing"),
    ({k: v for k, v in GOOD.items() if k != "format_version"}, "'format_version' is missing"),
    ({**GOOD, "width": 0}, "'width' must be a positive integer"),
    ({**GOOD, "width": True}, "'width' must be a positive integer"),
    ({**GOOD, "total": -1}, "'total' must be a non-negative integer"),
    ({**GOOD, "per_class": {"zero": 3}}, "'per_class' must be an object mapping class numbers"),
    ({**GOOD, "per_class": {"0": 1.5}}, "'per_class' must be an object mapping class numbers"),
    ({**GOOD, "per_class": [3]}, "'per_class' must be an object mapping class numbers"),
    ({**GOOD, "dataset_digest": "A" * 64}, "'dataset_digest' must be 64 lowercase hex digits"),
    ({**GOOD, "formats": ["csv"]}, "'formats' must be a list of distinct formats out of parquet, tfrecord"),
    ({**GOOD, "formats": ["parquet", "parquet"]}, "'formats' must be a list of distinct formats"),
    ({**GOOD, "latent_dim": "3"}, "'latent_dim' must be a non-negative integer"),
    ({**GOOD, "shards": {"path": "p"}}, "'shards' must be a list"),
    ({**GOOD, "shards": ["p"]}, "shard 0 is not an object"),
    (shard(sha256=None, bytes=None) | {}, "shard 0 'bytes' must be a non-negative integer; shard 0 'sha256' must"),
    ({**GOOD, "shards": [{"path": SHARD["path"], "format": "parquet"}]}, "shard 0 lacks rows, bytes"),
    ({**GOOD, "shards": [{k: v for k, v in SHARD.items() if k != "sha256"}]},
     "shard 0 lacks a checksum (crc32c or sha256)"),
    (shard(crc32c="ABC"), "shard 0 'crc32c' must be 8 lowercase hex digits"),
    (shard(format="csv"), "shard 0 format 'csv' is not one of parquet, tfrecord"),
    (shard(rows=-1), "shard 0 'rows' must be a non-negative integer"),
    (shard(rows=True), "shard 0 'rows' must be a non-negative integer"),
    (shard(sha256="abc"), "shard 0 'sha256' must be 64 lowercase hex digits"),
    ({**GOOD, "shards": [SHARD, SHARD]}, "a shard path is listed twice"),
    ({**GOOD, "formats": ["parquet", "tfrecord"]}, "'formats' has tfrecord but no tfrecord shard is listed"),
    ({**GOOD, "shards": [SHARD, {**SHARD, "format": "tfrecord", "path": "tfrecord/part-00000-of-00001.tfrecord"}]},
     "shards of format tfrecord are listed but 'formats' lacks it"),
])
def test_read_manifest_rejects_a_malformed_manifest_in_one_line(tmp_path, manifest, problem):
    out = write(tmp_path, manifest if isinstance(manifest, str) else json.dumps(manifest))
    with pytest.raises(layout.InvalidManifest) as e:
        layout.read_manifest(out)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'manifest.json'}: not a valid manifest (") and problem in message
    assert message.endswith("re-run generate to rewrite the output") and "\n" not in message


@pytest.mark.parametrize("path, why", [
    ("../other/parquet/part-00000-of-00001.parquet", "has a '..' segment and leaves the output folder"),
    ("parquet/../../x/parquet/part-00000-of-00001.parquet", "has a '..' segment"),
    ("/etc/passwd", "is absolute"),
    ("//host/share/part-00000-of-00001.parquet", "is absolute"),
    ("gs://x/y", "has a URL scheme"),
    ("file:parquet/part-00000-of-00001.parquet", "has a URL scheme"),
    ("parquet\\part-00000-of-00001.parquet", "contains a NUL or a backslash"),
    ("parquet/part-00000-of-00001.parquet\x00.txt", "contains a NUL or a backslash"),
    ("", "is not a path"),
    (7, "is not a path"),
    ("./parquet/part-00000-of-00001.parquet", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("parquet//part-00000-of-00001.parquet", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("tfrecord/part-00000-of-00001.parquet", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("parquet/part-00000-of-00001.tfrecord", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("manifest.json", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("parquet/sales.parquet", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("parquet/.temp-1/part-00000-of-00001.parquet", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
    ("parquet/part-00000-of-00001.parquet/x", "is not parquet/part-SSSSS-of-NNNNN.parquet"),
])
def test_read_manifest_refuses_a_shard_path_outside_our_shard_folder(tmp_path, path, why):
    write(tmp_path, shard(path=path))
    with pytest.raises(layout.InvalidManifest) as e:
        layout.read_manifest(str(tmp_path))
    assert f"shard 0 path {path!r} {why}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("shard_no, shards, token", [(0, 1, ""), (3, 16, "-1a2b3c"), (123456, 200000, "")])
def test_every_name_a_job_writes_is_accepted(tmp_path, shard_no, shards, token):
    name = layout.shard_name(layout.FILE_PREFIX, shard_no, shards, token + layout.SUFFIX["parquet"])
    path = layout.relative(layout.join(layout.shard_dir(str(tmp_path), "parquet"), name), str(tmp_path))
    write(tmp_path, shard(path=path))
    assert layout.read_manifest(str(tmp_path))["shards"][0]["path"] == path == "parquet/" + name


def test_a_newer_format_version_asks_to_upgrade_before_any_other_check(tmp_path):
    write(tmp_path, {"format_version": layout.FORMAT_VERSION + 1, "shards": "whatever a newer format holds"})
    with pytest.raises(DataError) as e:
        layout.read_manifest(str(tmp_path))
    assert not isinstance(e.value, layout.InvalidManifest)  # not damage: verify cannot check it either
    assert f"format_version {layout.FORMAT_VERSION + 1} was written by a newer vae-augment" in str(e.value)
    assert str(e.value).endswith("upgrade vae-augment to read it")


def test_a_manifest_that_is_not_a_regular_file_or_too_big_is_refused_without_reading_it(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "manifest.json")  # open() would block forever
    with pytest.raises(layout.InvalidManifest, match=r"manifest.json: not valid JSON \(it is a FIFO, not a regular"):
        layout.read_manifest(str(tmp_path))
    assert layout.owner_fingerprint(str(tmp_path)) is None  # publish asks too: unknown owner, no hang
    os.remove(tmp_path / "manifest.json")
    write(tmp_path, json.dumps(GOOD) + " " * 100)
    monkeypatch.setattr(layout, "JSON_MAX_BYTES", 50)
    with pytest.raises(layout.InvalidManifest, match=r"manifest.json: not valid JSON \(larger than 0 MiB\)"):
        layout.read_manifest(str(tmp_path))


def test_an_unreadable_manifest_says_so(tmp_path, monkeypatch):
    write(tmp_path, GOOD)

    def denied(*_, **__):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(layout.FileSystems, "open", denied)
    with pytest.raises(DataError, match="manifest.json: cannot be read .*Permission denied.*; check its permissions"):
        layout.read_manifest(str(tmp_path))


def test_read_manifest_rejects_broken_json_and_a_missing_manifest(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path} has no manifest.json: it is not a finished"):
        layout.read_manifest(str(tmp_path))
    with pytest.raises(DataError, match="does not exist, so it has no manifest.json"):
        layout.read_manifest(str(tmp_path / "nowhere"))
    write(tmp_path, '{"shards": [')
    with pytest.raises(layout.InvalidManifest, match=r"manifest.json: not valid JSON \(.*\); re-run generate"):
        layout.read_manifest(str(tmp_path))


@pytest.mark.parametrize("name", ["g[1]", "a*b?c", "with space", "g[!x]"])
def test_list_files_lists_exactly_one_folder_whatever_glob_characters_its_name_holds(tmp_path, name):
    for folder in (name, "g1", "gx", "aXbYc", "with", "g\\1", "g\\!x]"):  # what the name would match as a glob
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "part").write_text(folder)
    (tmp_path / name / "sub").mkdir()
    (tmp_path / name / "sub" / "deeper").write_text("not directly in it")
    assert layout.list_files(str(tmp_path / name)) == {str(tmp_path / name / "part"): len(name)}
    assert layout.list_entries(str(tmp_path / name)) == [str(tmp_path / name / n) for n in ("part", "sub")]


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
