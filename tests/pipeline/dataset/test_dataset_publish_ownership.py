"""prepare, abandon and remove_temp_leftovers remove only what a generate job wrote, found by explicit listings:
anything named like ours that we cannot prove we wrote is refused with one line and left as it was, object-store
"folders" are prefixes, and glob characters in OUT are plain characters. Local and gs:// (the GCS emulator)."""
import os

import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline.dataset import layout, publish
from pipeline.dataset.verify import verify_output
from vae_model.errors import UsageError

# What a killed or replayed job may leave besides its output: a shard of another --shards, Beam's and our temp
# folders, the summary, a manifest write cut short.
LEFTOVERS = ["parquet/part-00000-of-00001.parquet", "tfrecord/.temp-tfrecord-0a1b/part-0",
             "parquet/beam-temp-x/part-1", ".vae-augment-summary/shards/parquet-00000.json",
             ".vae-augment-summary/summary.json", "manifest.json.tmp"]
USER_FILES = {"preview.png": b"png", "notes/todo.txt": b"mine"}  # next to an output, never named like ours


def local_tree(root) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(root) for n in names}


def write(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = layout.join(root, rel)
        if "://" not in path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with FileSystems.create(path) as f:
            f.write(data)


def test_overwrite_removes_exactly_our_files(damaged):
    out = str(damaged)
    write(out, {**dict.fromkeys(LEFTOVERS, b"x"), **USER_FILES})
    publish.prepare(out, "another-job", overwrite=True)
    assert local_tree(out).keys() == {layout.JOB_MARKER, *USER_FILES}
    assert layout.owner_fingerprint(out) == "another-job"


def test_a_rerun_clears_a_killed_jobs_leftovers_without_overwrite(damaged, job_fingerprint):
    out = str(damaged)
    write(out, dict.fromkeys(LEFTOVERS, b"x"))
    publish.prepare(out, job_fingerprint, overwrite=False)
    assert local_tree(out).keys() == {layout.JOB_MARKER}


@pytest.mark.parametrize("files,named", [
    # the case: user files where ours go, no marker or manifest of ours
    ({"parquet/2023/sales.parquet": b"s", "tfrecord/train.tfrecord": b"t", "manifest.json": b'{"mine": 1}'},
     ["parquet/2023", "tfrecord/train.tfrecord", "manifest.json (not a valid manifest of ours"]),
    # our shard naming alone proves nothing
    ({"parquet/part-00000-of-00001.parquet": b"p"}, ["parquet/part-00000-of-00001.parquet (in a folder with no"]),
    ({"parquet": b"a file, not a folder"}, ["parquet (not a folder)"]),
])
def test_overwrite_refuses_what_we_cannot_prove_we_wrote(tmp_path, files, named):
    out = tmp_path / "o"
    write(str(out), files)
    with pytest.raises(UsageError) as e:
        publish.prepare(str(out), "fp", overwrite=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--out {out} holds files vae-augment did not write: ")
    assert all(n in msg for n in named), msg
    assert local_tree(out) == files  # untouched
    publish.abandon(str(out))
    assert local_tree(out) == files


def test_user_files_in_our_shard_folders_block_even_our_own_output(damaged):
    out = str(damaged)
    before = local_tree(out)
    write(out, {"parquet/2023/sales.parquet": b"s", "tfrecord/notes.txt": b"n"})
    with pytest.raises(UsageError, match=r"parquet/2023 \(not a shard or temp folder of ours\), tfrecord/notes"):
        publish.prepare(out, "another-job", overwrite=True)
    assert local_tree(out) == {**before, "parquet/2023/sales.parquet": b"s", "tfrecord/notes.txt": b"n"}


def test_a_foreign_manifest_blocks_even_with_our_marker(damaged):
    (damaged / "manifest.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match=r"manifest.json \(not a valid manifest of ours; `vae-augment verify`"):
        publish.prepare(str(damaged), "another-job", overwrite=True)
    assert (damaged / "parquet").exists()


def test_glob_characters_in_out_are_plain_characters(tmp_path, write_job_output):
    out = str(tmp_path / "g[1] *?")
    lookalike = tmp_path / "g1 x!"  # what 'g[1] *?' would match as a glob
    write(str(lookalike), {"parquet/part-00000-of-00002.parquet": b"not yours"})
    write_job_output(out)  # prepare, then finalize lists the shards
    assert verify_output(out) == []
    temp = layout.join(layout.shard_dir(out, "parquet"), ".temp-parquet-1")
    write(out, {"parquet/.temp-parquet-1/part": b"x"})
    assert publish.remove_temp_leftovers(out) == [temp] and not os.path.exists(temp)
    publish.abandon(out)
    assert local_tree(out).keys() == {layout.JOB_MARKER}
    assert local_tree(lookalike) == {"parquet/part-00000-of-00002.parquet": b"not yours"}


# ---------------------------------------------------------------------------------------------- gs://

def bucket_objects(bucket: str) -> set[str]:
    from google.cloud import storage
    return {b.name for b in storage.Client.create_anonymous_client().list_blobs(bucket[len("gs://"):])}


@pytest.fixture
def gcs_output(gcs_bucket, generated):
    """gs://BUCKET/o: a copy of `generated` (a finished output), and a lookalike prefix gs://BUCKET/o-old/."""
    out = gcs_bucket + "/o"
    write(out, local_tree(generated[0]))
    write(gcs_bucket + "/o-old", {"parquet/part-00000-of-00002.parquet": b"not ours to touch"})
    return out


def test_gcs_overwrite_removes_our_objects_by_prefix_and_nothing_else(gcs_output, gcs_bucket):
    assert verify_output(gcs_output) == []
    write(gcs_output, {**dict.fromkeys(LEFTOVERS, b"x"), **USER_FILES})
    publish.prepare(gcs_output, "another-job", overwrite=True)
    assert bucket_objects(gcs_bucket) == {"o/" + layout.JOB_MARKER, *("o/" + n for n in USER_FILES),
                                          "o-old/parquet/part-00000-of-00002.parquet"}
    assert layout.owner_fingerprint(gcs_output) == "another-job"


def test_gcs_abandon_and_temp_cleanup_leave_no_temp_objects(gcs_output, gcs_bucket):
    write(gcs_output, {"tfrecord/.temp-tfrecord-0a1b/part-0": b"x", "parquet/.temp-parquet-2/a/b": b"y"})
    removed = publish.remove_temp_leftovers(gcs_output)
    assert sorted(removed) == [gcs_output + "/parquet/.temp-parquet-2", gcs_output + "/tfrecord/.temp-tfrecord-0a1b"]
    assert not [n for n in bucket_objects(gcs_bucket) if ".temp-" in n]
    assert verify_output(gcs_output) == []
    publish.abandon(gcs_output)
    assert bucket_objects(gcs_bucket) == {"o/" + layout.JOB_MARKER, "o-old/parquet/part-00000-of-00002.parquet"}


def test_gcs_user_objects_under_our_prefixes_are_refused(gcs_bucket):
    out = gcs_bucket + "/o"
    files = {"parquet/2023/sales.parquet": b"s", "tfrecord/train.tfrecord": b"t"}
    write(out, files)
    with pytest.raises(UsageError, match=r"parquet/2023 \(in a folder with no job marker .*tfrecord/train.tfrecord"):
        publish.prepare(out, "fp", overwrite=True)
    assert bucket_objects(gcs_bucket) == {"o/" + n for n in files}
