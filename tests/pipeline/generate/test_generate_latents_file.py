"""generate --latents FILE: LatentFile's checks (one line naming the file), its work units (consecutive rows) and
the rows a worker reads, for .npy, .npz (stored and compressed) and Parquet; then the job's option checks, and one
whole job whose pixels are the decoder's own for the file's codes."""
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.generate.job import GenerateJob, validate
from pipeline.generate.latents import LatentFile
from pipeline.generate.options import parse_generate_args
from vae_model.errors import DataError, UsageError

D, CLASSES = 4, 10


def _codes(n=300, d=D, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, CLASSES, n)


def _write(tmp_path, kind, z, labels=None, row_group_size=64):
    path = tmp_path / f"codes.{kind}"
    if kind == "npy":
        np.save(path, z)
    elif kind == "npz":
        np.savez(path, z=z, **({} if labels is None else {"labels": labels}))
    elif kind == "npzc":
        path = tmp_path / "codes.npz"
        np.savez_compressed(path, z=z, **({} if labels is None else {"labels": labels}))
    else:
        cols = {"latent": pa.array(list(z), pa.list_(pa.float32()))}
        if labels is not None:
            cols["label"] = pa.array(labels, pa.int64())
        pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return str(path)


def _open(path, conditional=False):
    return LatentFile.open(path, D, CLASSES, conditional)


@pytest.mark.parametrize("kind", ["npy", "npz", "npzc", "parquet"])
def test_codes_of_every_unit_are_the_files_rows_in_order(tmp_path, kind):
    z, labels = _codes(300)
    labeled = kind != "npy"
    lf = _open(_write(tmp_path, kind, z, labels if labeled else None))
    assert (lf.rows, lf.latent_dim, lf.labeled) == (300, D, labeled) and len(lf.sha256) == 64
    want = labels if labeled else np.full(300, -1)
    assert lf.counts() == {int(c): int(n) for c, n in zip(*np.unique(want, return_counts=True))}
    units = lf.plan(capacity=64, num_shards=3)
    # ceil(300 / 64) = 5 units, rounded up to a multiple of the 3 shards: 6 units of 50 consecutive rows
    assert [u.rows for u in units] == [(i * 50, i * 50 + 50) for i in range(6)]
    assert [u.unit_id for u in units] == list(range(6))
    worker = pickle.loads(pickle.dumps(lf))  # what a Beam worker gets: no driver-side labels
    assert worker._labels is None
    got_z, got_l = zip(*(worker.codes(u) for u in units))
    np.testing.assert_array_equal(np.concatenate(got_z), z)
    np.testing.assert_array_equal(np.concatenate(got_l), want)
    for u, lab in zip(units, got_l):
        cls, n = np.unique(lab, return_counts=True)
        assert (u.labels, u.counts, u.count) == (tuple(cls.tolist()), tuple(n.tolist()), len(lab))
    assert all(z_.dtype == np.float32 and l_.dtype == np.int64 for z_, l_ in zip(got_z, got_l))


def test_plan_sizes_differ_by_at_most_one_row_and_never_exceed_capacity(tmp_path):
    lf = _open(_write(tmp_path, "npy", _codes(1001)[0]))
    for capacity, shards in [(4096, 1), (100, 4), (7, 5), (1001, 1000), (1, 1)]:
        units = lf.plan(capacity, shards)
        sizes = [u.count for u in units]
        assert sum(sizes) == 1001 and max(sizes) <= capacity and max(sizes) - min(sizes) <= 1
        assert units[0].rows[0] == 0 and all(a.rows[1] == b.rows[0] for a, b in zip(units, units[1:]))
        assert len(units) == 1001 or len(units) % shards == 0


def test_float64_codes_are_read_as_float32_and_parquet_row_groups_are_sliced(tmp_path):
    z, labels = _codes(200)
    lf = _open(_write(tmp_path, "parquet", z.astype(np.float64), labels, row_group_size=33))
    unit = lf.plan(capacity=70, num_shards=1)[1]  # rows 67..134 span several row groups
    got_z, got_l = lf.codes(unit)
    a, b = unit.rows
    np.testing.assert_array_equal(got_z, z[a:b])
    np.testing.assert_array_equal(got_l, labels[a:b])
    np64 = _open(_write(tmp_path, "npy", z.astype(np.float64)))
    assert np64.codes(np64.plan(4096, 1)[0])[0].dtype == np.float32


def _bad_files(tmp_path):
    z, labels = _codes(20)
    nan = z.copy()
    nan[7, 2] = np.nan
    out_of_range = labels.copy()
    out_of_range[5] = 10
    (tmp_path / "junk.npy").write_bytes(b"not an npy file at all")
    np.savez(tmp_path / "nokey.npz", codes=z)
    (tmp_path / "trunc.npy").write_bytes(open(_write(tmp_path, "npy", z), "rb").read()[:-8])
    pq.write_table(pa.table({"z": pa.array(list(z), pa.list_(pa.float32()))}), tmp_path / "nolatent.parquet")
    ragged = pa.array([list(r) for r in z[:-1]] + [list(z[-1][:2])], pa.list_(pa.float32()))
    pq.write_table(pa.table({"latent": ragged}), tmp_path / "ragged.parquet")
    return [
        (str(tmp_path / "codes.csv"), UsageError, "Expected --latents to be a .npy, .npz or .parquet"),
        (str(tmp_path / "missing.npy"), DataError, "does not exist"),
        (str(tmp_path / "junk.npy"), DataError, "not a readable npy file"),
        (str(tmp_path / "nokey.npz"), DataError, "no member `z`"),
        (str(tmp_path / "trunc.npy"), DataError, "truncated"),
        (str(tmp_path / "nolatent.parquet"), DataError, "no `latent` column"),
        (str(tmp_path / "ragged.parquet"), DataError, "has 2 values"),
        (np.save(tmp_path / "d3.npy", z[:, :3]) or str(tmp_path / "d3.npy"), DataError, "3-D codes"),
        (np.save(tmp_path / "ints.npy", np.ones((4, D), np.int32)) or str(tmp_path / "ints.npy"), DataError,
         "not a 2-D float array"),
        (np.save(tmp_path / "empty.npy", np.zeros((0, D), np.float32)) or str(tmp_path / "empty.npy"), DataError,
         "holds no codes"),
        (np.save(tmp_path / "nan.npy", nan) or str(tmp_path / "nan.npy"), DataError, "row 7 has a NaN"),
        (np.savez(tmp_path / "lab.npz", z=z, labels=out_of_range) or str(tmp_path / "lab.npz"), DataError,
         "row 5 has label 10"),
        (np.savez(tmp_path / "flab.npz", z=z, labels=labels.astype(float)) or str(tmp_path / "flab.npz"),
         DataError, "not 20 integers"),
    ]


def test_every_bad_file_is_one_line_naming_the_file(tmp_path):
    for path, error, needle in _bad_files(tmp_path):
        with pytest.raises(error) as e:
            _open(path)
        msg = str(e.value)
        assert needle in msg and path in msg and "\n" not in msg, (path, msg)


def test_a_conditional_model_needs_labels(tmp_path):
    path = _write(tmp_path, "npy", _codes(10)[0])
    with pytest.raises(DataError, match="no labels, which this conditional model needs"):
        _open(path, conditional=True)
    z, labels = _codes(10)
    labels[3] = -1  # unlabeled: fine unconditionally, not for a conditional model
    path = _write(tmp_path, "npz", z, labels)
    assert _open(path).counts()[-1] == 1
    with pytest.raises(DataError, match="row 3 has label -1"):
        _open(path, conditional=True)


# ------------------------------------------------------------------------------------------------ the job


def test_validate_counts_shards_and_fingerprint_come_from_the_file(tmp_path, bundled):
    d = bundled.latent_dim
    z = np.random.default_rng(1).standard_normal((30, d)).astype(np.float32)
    path = tmp_path / "z.npz"
    np.savez(path, z=z, labels=np.arange(30) % 3)
    job = GenerateJob(out="X", latents=str(path), shards=2)
    checked = validate(job, bundled)
    assert isinstance(checked.sampler, LatentFile) and checked.counts == {0: 10, 1: 10, 2: 10}
    assert (job.sampler, job.shards, checked.class_stats, checked.record_filter) == ("latents", 2, None, None)
    fp = job.record_fingerprint(bundled.model_id)
    z[0, 0] += 1
    np.savez(path, z=z, labels=np.arange(30) % 3)
    job2 = GenerateJob(out="Y", latents=str(path), shards=2)
    validate(job2, bundled)
    assert job2.record_fingerprint(bundled.model_id) != fp  # same path, other codes: other records
    with pytest.raises(UsageError, match="--shards 31 must be between 1 and the number of rows"):
        validate(GenerateJob(out="X", latents=str(path), shards=31), bundled)


@pytest.mark.parametrize("kw,flags", [
    (dict(num=5), "--num"), (dict(per_class=5), "--per-class"), (dict(classes=[1]), "--classes"),
    (dict(sampler="prior"), "--sampler"), (dict(stats="s.npz"), "--stats"), (dict(spread=2.0), "--spread"),
    (dict(labeled_data="mnist"), "--labeled-data"), (dict(filter_classifier="bundled"), "--filter-classifier"),
    (dict(num=5, classes=[1]), "--num, --classes"),
])
def test_latents_exclude_the_sampling_options(tmp_path, bundled, kw, flags):
    with pytest.raises(UsageError, match=f"Expected no {flags} with --latents"):
        validate(GenerateJob(out="X", latents=str(tmp_path / "z.npy"), **kw), bundled)


def test_the_cli_refuses_an_explicit_sampler_with_latents():
    with pytest.raises(UsageError, match="Expected no --sampler with --latents"):
        parse_generate_args(["--out", "X", "--latents", "z.npy", "--sampler", "posterior"])
    job, _ = parse_generate_args(["--out", "X", "--latents", "z.npy"])
    assert job.latents == "z.npy" and job.num is None


@pytest.mark.parametrize("args,code,needle", [
    (["--latents", "/no/such/codes.npy"], 1, "--latents /no/such/codes.npy does not exist"),
    (["--latents", "codes.csv"], 2, "Expected --latents to be a .npy, .npz or .parquet file"),
    (["--latents", "z.npy", "--num", "5"], 2, "Expected no --num with --latents"),
    (["--latents", "z.npy", "--sampler", "prior"], 2, "Expected no --sampler with --latents"),
])
def test_the_cli_reports_latents_mistakes_in_one_line(args, code, needle):
    from click.testing import CliRunner

    from pipeline.cli import cli

    res = CliRunner().invoke(cli, ["generate", "--out", "X", *args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and needle in res.output.strip().splitlines()[-1]


@pytest.mark.e2e
def test_generate_latents_decodes_the_files_codes_to_the_decoders_pixels(tmp_path, bundled, local_args):
    """300 rows through the whole job and both sinks: the records are the file's rows (codes, labels) and their
    pixels are what the decoder gives those codes at the job's batch size."""
    from pipeline.dataset.arrow import images_from_column
    from pipeline.dataset.readers import load_table
    from pipeline.dataset.verify import verify_output
    from pipeline.decode import decode_points
    from pipeline.generate.graph import run_job

    rng = np.random.default_rng(3)
    z = rng.standard_normal((300, bundled.latent_dim)).astype(np.float32)
    labels = rng.integers(0, bundled.num_classes, 300)
    path = tmp_path / "codes.parquet"
    pq.write_table(pa.table({"latent": pa.array(list(z), pa.list_(pa.float32())), "label": labels}), path,
                   row_group_size=50)
    out = tmp_path / "out"
    job = GenerateJob(out=str(out), latents=str(path), batch_size=64, shards=2)
    m = run_job(job, local_args)
    assert m["total"] == 300 and m["sampler"] == "latents"
    assert m["per_class"] == {str(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    assert verify_output(str(out)) == []
    table = load_table(str(out), columns=["image", "label", "latent"])
    images = images_from_column(table.column("image"), m["height"], m["width"])
    got_labels = table.column("label").to_numpy()
    latents = table.column("latent").combine_chunks().flatten().to_numpy().reshape(len(table), -1)
    # match records to rows by their codes (the order inside a shard is the job's business)
    order = np.lexsort(latents.T[::-1])
    want = np.lexsort(z.T[::-1])
    np.testing.assert_array_equal(latents[order], z[want])
    np.testing.assert_array_equal(got_labels[order], labels[want])
    pixels, _ = decode_points(z, model=None, batch_size=job.batch_size)
    np.testing.assert_array_equal(images[order], pixels[want])


@pytest.mark.e2e  # starts the GCS emulator
@pytest.mark.parametrize("kind", ["npy", "npz", "parquet"])
def test_a_latent_file_on_gcs_reads_as_its_local_copy(gcs_bucket, tmp_path, kind):
    from apache_beam.io.filesystems import FileSystems

    z, labels = _codes(150)
    local = _write(tmp_path, kind, z, None if kind == "npy" else labels)
    remote = f"{gcs_bucket}/in/codes.{kind}"
    with open(local, "rb") as src, FileSystems.create(remote) as dst:
        dst.write(src.read())
    lf, here = _open(remote), _open(local)
    assert (lf.rows, lf.labeled, lf.sha256, lf.counts()) == (here.rows, here.labeled, here.sha256, here.counts())
    units = lf.plan(capacity=40, num_shards=2)
    got = [pickle.loads(pickle.dumps(lf)).codes(u) for u in units]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), z)
    with pytest.raises(DataError, match=f"--latents {gcs_bucket}/in/missing.npy does not exist"):
        _open(f"{gcs_bucket}/in/missing.npy")
