"""Model directories (vae_model/model_dir.py): model.json, sha256-checked encoder/decoder, "bundled"."""
import hashlib
import json

import pytest

from vae_model.errors import ModelError
from vae_model.model_dir import ModelDir, bundled_model_dir


def test_the_bundled_model_json_records_the_sha256_of_every_file(bundled):
    for name, digest in bundled.meta["sha256"].items():
        assert hashlib.sha256(open(bundled.file(name), "rb").read()).hexdigest() == digest
    assert {"encoder.keras", "decoder.keras"} <= set(bundled.meta["sha256"])


def test_bundled_names_the_shipped_model(bundled):
    assert ModelDir.open("bundled").path == ModelDir.open(None).path == bundled.path == bundled_model_dir()


def test_a_flipped_byte_in_the_decoder_is_a_model_error_naming_the_file(model_copy):
    dec = model_copy / "decoder.keras"
    data = bytearray(dec.read_bytes())
    data[len(data) // 2] ^= 0x01
    dec.write_bytes(bytes(data))
    md = ModelDir.open(str(model_copy))
    with pytest.raises(ModelError) as e:
        md.decoder
    message = str(e.value)
    assert str(dec) in message and "does not match the sha256 in model.json" in message and "\n" not in message
    assert md.encoder.inputs[0].shape[1:] == (28, 28, 1)  # the untouched file still loads


def test_a_resealed_file_of_the_wrong_role_or_a_damaged_one_is_still_refused(model_copy, reseal):
    dec = model_copy / "decoder.keras"
    dec.write_bytes((model_copy / "encoder.keras").read_bytes())
    reseal(model_copy, "decoder.keras")
    with pytest.raises(ModelError, match="decoder.keras does not look like a decoder"):
        ModelDir.open(str(model_copy)).decoder
    dec.write_bytes(b"\x00garbage" * 1000)
    reseal(model_copy, "decoder.keras")
    with pytest.raises(ModelError, match="decoder.keras could not be loaded as a Keras model"):
        ModelDir.open(str(model_copy)).decoder
    dec.unlink()
    with pytest.raises(ModelError, match="decoder.keras is missing"):
        ModelDir.open(str(model_copy)).decoder


def test_a_model_json_without_checksums_or_a_missing_directory_is_refused(model_copy, tmp_path):
    meta = json.loads((model_copy / "model.json").read_text())
    del meta["sha256"]["encoder.keras"]
    (model_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a valid model.json .*encoder.keras"):
        ModelDir.open(str(model_copy))
    with pytest.raises(ModelError, match="does not exist"):
        ModelDir.open(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no model.json"):
        ModelDir.open(str(tmp_path / "empty"))
