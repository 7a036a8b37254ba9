"""generate --checksums crc32c|sha256: parsing and validation (usage errors, exit 2), the fingerprint it leaves
alone, and one small job whose manifest records each shard's sha256, which `verify` then checks."""
import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.generate.job import CHECKSUMS, GenerateJob, check_checksums, validate
from pipeline.generate.options import parse_generate_args
from vae_model.errors import UsageError


def test_the_flag_parses_to_a_tuple_and_crc32c_is_always_kept(bundled):
    job, _ = parse_generate_args(["--out", "X", "--num", "10", "--checksums", "sha256"])
    assert job.checksums == ("sha256",)
    validate(job, bundled)
    assert job.checksums == ("crc32c", "sha256")
    assert parse_generate_args(["--out", "X", "--num", "10"])[0].checksums == ("crc32c",)
    assert check_checksums(("sha256", "crc32c", "sha256")) == ("crc32c", "sha256")
    assert check_checksums("sha256") == ("crc32c", "sha256")


def test_the_names_are_the_sinks():
    from pipeline.dataset.layout import SHARD_CHECKSUMS
    from pipeline.generate import sinks

    assert CHECKSUMS == sinks.CHECKSUMS and set(CHECKSUMS) == set(SHARD_CHECKSUMS)


@pytest.mark.parametrize("value", ["md5", "sha256,md5", "SHA256"])
def test_a_bad_value_is_a_usage_error(bundled, value):
    with pytest.raises(UsageError, match=f"Expected --checksums .* Received: checksums={value}"):
        validate(GenerateJob(out="X", num=10, checksums=tuple(value.split(","))), bundled)


def test_the_cli_exits_2_with_one_line():
    res = CliRunner().invoke(cli, ["generate", "--out", "X", "--per-class", "5", "--checksums", "md5"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    last = res.output.strip().splitlines()[-1]
    assert "Expected --checksums" in last and "Received: checksums=md5" in last


def test_checksums_do_not_change_the_fingerprint(bundled):
    """They do not change a record; like --formats they only change which files and checksums are written, so a
    rerun into the same --out with other --checksums needs no --overwrite (prepare accepts the same fingerprint)."""
    fps = set()
    for checksums in (("crc32c",), ("sha256",)):
        job = GenerateJob(out="X", num=10, checksums=checksums)
        validate(job, bundled)
        fps.add(job.record_fingerprint(bundled.model_id))
    assert len(fps) == 1


@pytest.mark.e2e
def test_sha256_reaches_the_manifest_and_verify_checks_it(tmp_path, generate):
    from pipeline.dataset.verify import verify_output

    out = tmp_path / "out"
    m = generate(out, num=200, shards=2)
    assert all("sha256" not in s and len(s["crc32c"]) == 8 for s in m["shards"])
    # the same job with sha256 too, into the same --out without --overwrite: its records are the same
    m = generate(out, num=200, shards=2, checksums=("sha256",))
    assert list(m["config"]["checksums"]) == ["crc32c", "sha256"]
    assert len(m["shards"]) == 4 and all(len(s["sha256"]) == 64 and len(s["crc32c"]) == 8 for s in m["shards"])
    assert verify_output(str(out)) == [] and verify_output(str(out), records=False) == []

    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    first = manifest["shards"][0]
    # a manifest sha256 that does not match: only sha256 can tell (the file and its crc32c are intact)
    wrong = dict(manifest, shards=[dict(first, sha256="0" * 64), *manifest["shards"][1:]])
    manifest_path.write_text(json.dumps(wrong))
    for records in (True, False):
        problems = verify_output(str(out), records=records)
        assert problems == [f"{first['path']}: sha256 differs from the manifest (the file was changed or damaged)"]
    manifest_path.write_text(json.dumps(manifest))

    shard = out / first["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = verify_output(str(out), records=False)
    assert any("sha256 differs" in p for p in problems) and any("crc32c differs" in p for p in problems)
