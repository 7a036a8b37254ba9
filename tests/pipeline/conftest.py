"""Fixtures shared by the pipeline tests: a real GCS API on a loopback port (gcp-storage-emulator), so gs://
outputs go through Beam's own gs:// filesystem and the google-cloud-storage client; the fault-injection log."""
import os
import subprocess
import sys
import uuid

import pytest
from ports import free_port, wait_for_port

EMULATOR = os.path.join(os.path.dirname(__file__), "gcs_emulator.py")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """URL of a gcp-storage-emulator (plus generation preconditions, see gcs_emulator.py) serving in memory."""
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("google.cloud.storage")
    port = free_port()
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "w")
    proc = subprocess.Popen([sys.executable, EMULATOR, "start", "--host", "127.0.0.1", "--port", str(port),
                             "--in-memory", "--quiet"], stdout=log, stderr=subprocess.STDOUT)
    if not wait_for_port(port, proc, timeout=30):
        proc.kill()
        pytest.fail(f"the GCS emulator did not start (see {log.name})")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch):
    """gs://BUCKET, a new bucket of the emulator, with STORAGE_EMULATOR_HOST set for this test (and the processes
    it starts); jobs writing there get `--no_auth` (see publish.use_anonymous_gcs)."""
    from google.cloud import storage

    from pipeline.dataset.publish import use_anonymous_gcs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    use_anonymous_gcs(True)
    name = f"vae-test-{uuid.uuid4().hex[:12]}"
    storage.Client.create_anonymous_client().create_bucket(name)
    return f"gs://{name}"


@pytest.fixture
def faults_log(monkeypatch, tmp_path):
    """The file this test's injected faults (pipeline/generate/faults.py) are logged to; none has fired yet."""
    from pipeline.generate import faults

    monkeypatch.setattr(faults, "_fired", set())
    monkeypatch.setenv("VAE_AUGMENT_FAULTS_LOG", str(tmp_path / "faults.log"))
    return tmp_path / "faults.log"
