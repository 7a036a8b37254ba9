"""`vae-augment decode`: hand-picked latent points to a PNG / .npy holding exactly the decoder's pixels."""
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import cli
from pipeline.decode import DEFAULT_BATCH_SIZE, tile_row
from pipeline.generate.job import GenerateJob


@pytest.fixture(scope="module")
def points(bundled):
    rng = np.random.default_rng(3)
    return rng.normal(size=(3, bundled.latent_dim)).astype(np.float32)


def test_decode_writes_the_decoders_own_pixels(tmp_path, bundled, points):
    from vae_model.inference import BatchDecoder

    png, npy = tmp_path / "z.png", tmp_path / "z.npy"
    args = ["decode", "--png", str(png), "--npy", str(npy)]
    for z in points:
        args += ["--z", ",".join(repr(float(v)) for v in z)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    want, bad = BatchDecoder(bundled.decoder, GenerateJob.batch_size)(points)
    assert bad == 0
    np.testing.assert_array_equal(np.load(npy), want)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), tile_row(want))


def test_scale_replicates_pixels_without_changing_them():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    big = tile_row(images, 3)
    assert big.shape == (9, 24)
    np.testing.assert_array_equal(big[::3, ::3], tile_row(images))


def test_decode_batches_like_generate():
    assert DEFAULT_BATCH_SIZE == GenerateJob.batch_size


@pytest.mark.parametrize("args,needle", [
    (["--z", "0,2.5"], "give 20 comma-separated numbers"),
    (["--z", "0,x"], "--z '0,x' is not a comma-separated list"),
    (["--z", ",".join(["0"] * 20), "--label", "3"], "--label applies only to a conditional model"),
    (["--z", ",".join(["nan"] * 20)], "NaN or infinite"),
])
def test_bad_points_are_one_error_line_and_write_nothing(tmp_path, args, needle):
    png = tmp_path / "z.png"
    r = CliRunner().invoke(cli, ["decode", "--png", str(png), *args])
    assert r.exit_code == 2
    assert needle in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not png.exists()
