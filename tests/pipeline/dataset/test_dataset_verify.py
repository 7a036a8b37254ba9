"""`verify`: every shard checked against the manifest, every record read back; damage is found and named."""
import shutil

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.dataset.readers import load_parquet, tfrecord_dataset
from pipeline.dataset.verify import format_digests, verify_output
from vae_model.errors import DataError


def run_verify(out):
    res = CliRunner().invoke(cli, ["verify", str(out)])
    return res.exit_code, res.output


def test_verify_passes_an_intact_output(damaged, generated):
    code, text = run_verify(damaged)
    assert code == 0 and "OK" in text
    # both formats hold exactly the records the job summed into the manifest's digest
    assert format_digests(str(damaged)) == {"parquet": generated[1]["dataset_digest"],
                                            "tfrecord": generated[1]["dataset_digest"]}


def test_verify_finds_a_flipped_byte(damaged):
    shard = sorted((damaged / "parquet").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    code, text = run_verify(damaged)
    assert code == 1 and f"parquet/{shard.name}: sha256 differs" in text
    with pytest.raises(DataError, match="failed verification"):
        load_parquet(str(damaged), verify=True)


def test_verify_finds_a_missing_and_an_extra_shard_each_once(damaged):
    shards = sorted((damaged / "tfrecord").glob("*.tfrecord"))
    shutil.move(shards[0], damaged / "tfrecord" / "part-00007-of-00009.tfrecord")
    code, text = run_verify(damaged)
    assert code == 1
    # the tfrecord totals are not checked with a shard unread: they would only repeat its problem
    assert text.splitlines() == [f"FAIL tfrecord/{shards[0].name}: missing",
                                 "FAIL tfrecord/part-00007-of-00009.tfrecord: extra file not in the manifest",
                                 f"{damaged}: 2 problem(s)"]


def test_verify_finds_a_truncated_and_a_corrupt_tfrecord(damaged):
    first, last = sorted((damaged / "tfrecord").glob("*.tfrecord"))
    last.write_bytes(last.read_bytes()[:-100])
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only reading the records finds it
    first.write_bytes(bytes(data))
    code, text = run_verify(damaged)
    assert code == 1
    assert f"tfrecord/{last.name}: {last.stat().st_size} bytes, manifest says" in text
    assert f"tfrecord/{first.name}: sha256 differs" in text
    assert f"tfrecord/{first.name}: unreadable tfrecord (ValueError: TFRecord data CRC mismatch" in text
    with pytest.raises(DataError, match="failed verification"):
        list(tfrecord_dataset(str(damaged), verify=True))
    with pytest.raises(DataError, match=f"{last.name}: {last.stat().st_size} bytes, manifest says"):
        tfrecord_dataset(str(damaged))  # the cheap check, always on, finds the truncation too


def test_verify_finds_records_outside_the_manifest_classes(damaged):
    import json
    path = damaged / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["per_class"] = {"0": 100, "1": 200}  # class 2's records are now outside the job's classes
    path.write_text(json.dumps(manifest))
    problems = verify_output(str(damaged))
    assert any("labels [2] are outside the job's classes [0, 1]" in p for p in problems)
    assert "parquet: per-class counts {'0': 100, '1': 100, '2': 100} differ from the manifest's " \
           "{'0': 100, '1': 200}" in problems
