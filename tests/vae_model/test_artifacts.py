"""What every artifact directory shares (vae_model/artifacts.py): atomic directory writes, sha256-checked Keras
loading, checksums and provenance."""
import hashlib
import os
import stat

import pytest

from vae_model import artifacts
from vae_model.errors import ModelError


def _tree(root):
    return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(root) for n in names}


def test_atomic_directory_replaces_the_old_directory_in_one_step(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with artifacts.atomic_directory(str(out), "model") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".tmp-model-")
        assert (out / "stale.txt").exists()  # nothing changes until the block succeeds
        os.makedirs(os.path.join(tmp, "plots"))
        with open(os.path.join(tmp, "plots", "a.png"), "wb") as f:
            f.write(b"png")
    assert _tree(out) == {os.path.join("plots", "a.png"): b"png"}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("existing", [True, False])
def test_an_exception_leaves_the_old_directory_untouched_and_no_temp_dir(tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("precious")
    with pytest.raises(KeyboardInterrupt):  # BaseException too: Ctrl-C mid-write must not leave debris
        with artifacts.atomic_directory(str(out), "report") as tmp:
            with open(os.path.join(tmp, "half.txt"), "w") as f:
                f.write("half")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == (["out"] if existing else [])
    if existing:
        assert _tree(out) == {"keep.txt": b"precious"}


def test_checksums_key_every_file_by_its_relative_path(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "a.keras").write_bytes(b"abc")
    (tmp_path / "plots" / "p.png").write_bytes(b"")
    assert artifacts.checksums(str(tmp_path)) == {"a.keras": hashlib.sha256(b"abc").hexdigest(),
                                                  "plots/p.png": hashlib.sha256(b"").hexdigest()}


def test_load_keras_checks_the_recorded_sha256_before_loading(tmp_path, bundled):
    data = open(bundled.file("decoder.keras"), "rb").read()
    path = tmp_path / "decoder.keras"
    path.write_bytes(data)
    fix = "retrain or re-copy it"
    model = artifacts.load_keras(str(path), hashlib.sha256(data).hexdigest(), "model.json", fix)
    assert model.inputs[0].shape[-1] == bundled.latent_dim
    assert artifacts.load_keras(str(path), None, "model.json", fix).count_params() == model.count_params()
    with pytest.raises(ModelError) as e:
        artifacts.load_keras(str(path), "0" * 64, "model.json", fix)
    assert str(e.value) == f"{path} does not match the sha256 in model.json (changed or damaged); {fix}"
    with pytest.raises(ModelError, match="is missing"):
        artifacts.load_keras(str(tmp_path / "none.keras"), None, "model.json", fix)


def test_bundled_or_none_resolves_to_the_shipped_directory():
    assert artifacts.resolve_dir(None, lambda: "/shipped") == artifacts.resolve_dir("bundled", lambda: "/shipped") \
        == "/shipped"
    assert artifacts.resolve_dir("gs://b/m", lambda: "/shipped") == "gs://b/m"


def test_command_line_names_the_command_whatever_started_it():
    assert artifacts.command_line(["/venv/bin/vae-augment", "train", "--set", "a=b c"]) == \
        "vae-augment train --set 'a=b c'"
    assert set(artifacts.versions()) >= {"python", "tensorflow", "keras", "numpy"}
