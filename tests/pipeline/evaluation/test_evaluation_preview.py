"""The per-class image grid (shared by `preview` and the report's samples figure) and `write_preview`."""
import numpy as np
import pytest

from pipeline.evaluation.preview import write_preview
from vae_model import plots
from vae_model.errors import DataError


@pytest.fixture
def drawn(monkeypatch):
    """What plots.save_image was asked to draw: (mosaic, path, title) per call."""
    calls = []
    monkeypatch.setattr(plots, "save_image", lambda mosaic, path, title=None: calls.append((mosaic, path, title)))
    return calls


def test_class_grid_has_a_row_per_label_with_the_first_images_and_black_padding(drawn):
    rng = np.random.default_rng(0)
    labels = np.array([2, -1, 2, 0, 2, 2, 0])
    images = rng.integers(1, 256, (7, 3, 2), dtype=np.uint8)  # never 0, so padding is recognisable
    assert plots.class_grid(images, labels, 3, "g.png", "rows: ") == [-1, 0, 2]
    (mosaic, path, title), = drawn
    assert path == "g.png" and title == "rows: unlabeled, 0, 2" and mosaic.shape == (3 * 3, 3 * 2)
    cell = lambda r, c: mosaic[r * 3:(r + 1) * 3, c * 2:(c + 1) * 2]  # noqa: E731
    np.testing.assert_array_equal(cell(0, 0), images[1])
    assert not cell(0, 1).any() and not cell(0, 2).any()
    np.testing.assert_array_equal(cell(1, 1), images[6])
    for c, i in enumerate([0, 2, 4]):  # the first three 2s; the fourth is left out
        np.testing.assert_array_equal(cell(2, c), images[i])


def test_class_grid_writes_a_png(tmp_path):
    plots.class_grid(np.full((4, 5, 5), 200, np.uint8), np.array([0, 1, 1, 1]), 2, str(tmp_path / "g.png"), "t ")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_preview_draws_the_same_grid_from_either_format(tmp_path, write_output, drawn):
    rng = np.random.default_rng(1)
    labels = np.array([3, 1, 3, 1, 1, 5])
    out = write_output(tmp_path / "o", rng.integers(0, 256, (6, 4, 4), dtype=np.uint8), labels)
    assert write_preview(out, "p.png", per_class=2, fmt="parquet") == 3
    assert write_preview(out, "q.png", per_class=2, fmt="tfrecord") == 3
    (a, _, title), (b, _, _) = drawn
    np.testing.assert_array_equal(a, b)
    assert title == "rows: class 1, 3, 5" and a.shape == (3 * 4, 2 * 4)


def test_preview_of_a_directory_without_manifest_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="has no manifest.json"):
        write_preview(str(tmp_path), str(tmp_path / "p.png"))
    assert not (tmp_path / "p.png").exists()
