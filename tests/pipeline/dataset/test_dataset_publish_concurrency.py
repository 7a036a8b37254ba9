"""One job, one dataset: OUT's job lock (publish.acquire / release / exclusive) on a local folder and on gs://
(the GCS emulator), and whole jobs started together into one OUT: at most one publishes, and what it reported is
what a reader finds."""
import json
import os
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline.dataset import layout, publish
from vae_model.errors import UsageError, UserError


@pytest.fixture(params=["local", "gcs"])
def out(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "o")
    return request.getfixturevalue("gcs_bucket") + "/o"


def test_a_second_job_is_refused_with_one_line_naming_the_owner_and_the_fix(out):
    lock = publish.acquire(out, "fp-a")
    with pytest.raises(publish.OutputUnavailable) as e:
        publish.acquire(out, "fp-b")
    msg = str(e.value)
    path = layout.lock_path(out)
    assert "\n" not in msg and e.value.exit_code == 1
    assert f"--out {out} is in use by generate job {lock.job_id[:12]}" in msg
    assert f"host {socket.gethostname()}, pid {os.getpid()}, started 20" in msg
    assert f"wait for it to finish, or if it is no longer running delete {path} and re-run" in msg
    publish.release(lock)
    assert not FileSystems.exists(path)
    publish.release(publish.acquire(out, "fp-b"))  # free again


def test_racing_jobs_get_the_lock_exactly_once(out):
    n = 6
    barrier = threading.Barrier(n)

    def attempt(i):
        barrier.wait()
        try:
            return publish.acquire(out, f"fp-{i}")
        except publish.OutputUnavailable:
            return None

    with ThreadPoolExecutor(n) as pool:
        won = [lock for lock in pool.map(attempt, range(n)) if lock]
    assert len(won) == 1
    with FileSystems.open(won[0].path) as f:
        assert json.loads(f.read())["job_id"] == won[0].job_id
    publish.release(won[0])


def test_release_never_removes_a_lock_another_job_took_since(out):
    mine = publish.acquire(out, "fp-a")
    FileSystems.delete([mine.path])  # deleted by hand while we run ...
    theirs = publish.acquire(out, "fp-b")  # ... and taken by another job
    publish.release(mine)
    with pytest.raises(publish.OutputUnavailable, match=theirs.job_id[:12]):
        publish.acquire(out, "fp-c")
    publish.release(theirs)


def test_exclusive_releases_the_lock_however_the_block_ends(out):
    with pytest.raises(KeyboardInterrupt):
        with publish.exclusive(out, "fp-a"):
            raise KeyboardInterrupt
    with publish.exclusive(out, "fp-b") as lock:
        assert lock.job_id
    assert not FileSystems.exists(layout.lock_path(out))


def test_the_lock_of_a_job_that_died_on_this_host_says_so(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer runs
    (out / layout.LOCK).write_text(json.dumps({"job_id": "dead0000beef", "host": socket.gethostname(),
                                               "pid": child.pid, "started": "2024-01-01T00:00:00Z"}))
    with pytest.raises(publish.OutputUnavailable, match="no longer running, so the job died; wait for it"):
        publish.acquire(str(out), "fp")


def test_outputs_that_cannot_be_locked_are_refused_up_front(tmp_path):
    with pytest.raises(UsageError, match=r"s3:// does not offer"):
        publish.acquire("s3://bucket/o", "fp")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        publish.acquire(str(tmp_path / "f"), "fp")


# ---------------------------------------------------------------------------------------------- whole jobs

def _race(out: str, seeds) -> list:
    """run_job for each seed, all started together; each result is a manifest or the UserError it failed with."""
    from pipeline.generate.graph import run_job
    from pipeline.generate.job import GenerateJob

    beam = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--no_auth"]
    barrier = threading.Barrier(len(seeds))

    def job(seed):
        barrier.wait()
        try:
            return run_job(GenerateJob(out=out, per_class=200, classes=[0, 1, 2], batch_size=512, seed=seed,
                                       shards=2), beam)
        except UserError as e:
            return e

    with ThreadPoolExecutor(len(seeds)) as pool:
        return list(pool.map(job, seeds))


@pytest.mark.e2e
def test_jobs_started_together_publish_one_dataset_and_report_only_what_readers_find(out):
    from pipeline.dataset.readers import load_parquet
    from pipeline.dataset.verify import verify_output

    results = _race(out, [11, 12, 13])
    won = [m for m in results if isinstance(m, dict)]
    lost = [e for e in results if isinstance(e, UserError)]
    assert len(won) == 1 and len(lost) == 2, results
    for e in lost:  # refused before touching OUT: the lock, or (if it came late) the winner's finished output
        assert "\n" not in str(e)
        assert "is in use by generate job" in str(e) or "already holds another job's" in str(e)
    assert verify_output(out) == []  # recomputes the digest from the records on disk
    published = layout.read_manifest(out)
    assert published["dataset_digest"] == won[0]["dataset_digest"] and published["seed"] == won[0]["seed"]
    images, labels = load_parquet(out)
    assert len(labels) == 600
    assert not FileSystems.exists(layout.lock_path(out))
