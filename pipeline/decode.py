"""`vae-augment decode`: a few latent points picked by hand ("a 3 at [0, 2.5]") through the model's decoder, to a
PNG (a row of images at the decoder's own pixels, optionally scaled up by whole-pixel replication) and/or .npy
(uint8 (n, H, W)). Decoded by vae_model.inference.BatchDecoder at generate's batch size, so a point gives exactly
the pixels a generate job gives it."""
from __future__ import annotations

import math

import numpy as np

from pipeline.generate.job import GenerateJob
from vae_model.errors import UsageError

DEFAULT_BATCH_SIZE = GenerateJob.batch_size  # generate's decode batch shape: the batch shape fixes the pixels


def parse_points(points: tuple[str, ...] | list[str]) -> np.ndarray:
    """["0,2.5", "1,-1"] -> float32 (n, d); UsageError naming the bad --z."""
    if not points:
        raise UsageError("decode needs at least one --z, e.g. --z 0,2.5")
    rows = []
    for text in points:
        try:
            row = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise UsageError(f"--z {text!r} is not a comma-separated list of numbers; write e.g. --z 0,2.5") from None
        if not all(math.isfinite(v) for v in row):
            raise UsageError(f"--z {text!r} has a NaN or infinite coordinate; give finite numbers")
        rows.append(row)
    if len({len(r) for r in rows}) > 1:
        raise UsageError(f"--z points have different sizes {sorted({len(r) for r in rows})}; give each point "
                         "all the model's latent coordinates")
    return np.asarray(rows, np.float32)


def tile_row(images: np.ndarray, scale: int = 1) -> np.ndarray:
    """(n, H, W) uint8 -> one (H*scale, n*W*scale) row; pixel values unchanged (nearest-pixel replication)."""
    row = np.concatenate(list(images), axis=1) if len(images) else np.zeros((0, 0), np.uint8)
    return np.kron(row, np.ones((scale, scale), np.uint8)) if scale > 1 else row


def _write(path: str, data: bytes, flag: str) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UsageError(f"cannot write {flag} {path} ({e.strerror}); choose a writable file") from None


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def decode_points(z: np.ndarray, labels=None, model: str | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, str]:
    """(uint8 (n, H, W) images, model_id) of latent points `z` (n, d); `labels` (one, or one per point) for a
    conditional model."""
    from vae_model.errors import ModelError
    from vae_model.inference import BatchDecoder
    from vae_model.model_dir import ModelDir

    md = ModelDir.open(model)
    if z.shape[1] != md.latent_dim:
        raise UsageError(f"--z has {z.shape[1]} coordinates but model {md.model_id} has a {md.latent_dim}-D latent "
                         f"space; give {md.latent_dim} comma-separated numbers per --z")
    labels = list(labels or ())
    if labels and not md.conditional:
        raise UsageError(f"--label applies only to a conditional model; {md.path} is not one (drop --label)")
    if md.conditional and not labels:
        raise UsageError(f"{md.path} is a conditional VAE: give the class with --label C (one, or one per --z)")
    if labels:
        if len(labels) not in (1, len(z)):
            raise UsageError(f"give one --label or one per --z ({len(z)}); received {len(labels)}")
        bad = [c for c in labels if not 0 <= c < md.num_classes]
        if bad:
            raise UsageError(f"--label {bad[0]} is outside the model's classes 0..{md.num_classes - 1}")
        labels = np.resize(np.asarray(labels, np.int64), len(z))
    images, nonfinite = BatchDecoder(md.decoder, batch_size, md.conditional, md.num_classes)(
        z, labels if len(labels) else None)
    if nonfinite:
        raise ModelError(f"the decoder of {md.path} returned {nonfinite} non-finite pixels for these points; "
                         "nothing was written")
    return images, md.model_id


def run_decode(points, labels=(), png: str | None = None, npy: str | None = None, model: str | None = None,
               scale: int = 1) -> np.ndarray:
    if not png and not npy:
        raise UsageError("decode writes --png FILE and/or --npy FILE; give at least one")
    if scale < 1:
        raise UsageError(f"--scale must be >= 1; received {scale}")
    z = parse_points(points)
    images, _ = decode_points(z, labels, model)
    if png:
        _write(png, png_bytes(tile_row(images, scale)), "--png")
    if npy:
        import io
        buf = io.BytesIO()
        np.save(buf, images)
        _write(npy, buf.getvalue(), "--npy")
    return images
