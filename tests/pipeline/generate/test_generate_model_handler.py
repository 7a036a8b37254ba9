"""RunInference(VAEDecoderHandler(model_dir)) decodes a user's own latent batches to the pixels generate's decoder
gives them, and reports RunInference's standard metrics."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference

from pipeline.generate.model_handler import VAEDecoderHandler


def test_run_inference_decodes_the_jobs_pixels_and_reports_metrics(bundled, tmp_path):
    from vae_model.inference import BatchDecoder
    from pipeline.generate.job import GenerateJob

    rng = np.random.default_rng(11)
    batches = [rng.normal(size=(n, bundled.latent_dim)).astype(np.float32) for n in (5, 64, 1)]
    got = {}

    p = beam.Pipeline(runner="DirectRunner", argv=["--direct_running_mode=in_memory"])
    _ = (p | beam.Create(list(enumerate(batches)))
           | beam.MapTuple(lambda i, z: {"z": z, "i": i})
           | RunInference(VAEDecoderHandler("bundled").with_preprocess_fn(lambda e: e["z"]).with_postprocess_fn(
               lambda r: (len(r.example), r.inference, r.model_id)))
           | beam.Map(lambda t: np.save(tmp_path / f"{t[2]}-{t[0]}.npy", t[1])))
    result = p.run()
    result.wait_until_finish()
    decoder = BatchDecoder(bundled.decoder, GenerateJob.batch_size)
    for z in batches:
        want, bad = decoder(z)
        np.testing.assert_array_equal(np.load(tmp_path / f"{bundled.model_id}-{len(z)}.npy"), want)
    metrics = result.metrics().query(MetricsFilter().with_namespace("VAEDecoderHandler"))
    names = {m.key.metric.name: m.committed for kind in ("counters", "distributions") for m in metrics[kind]}
    assert names["num_inferences"] == len(batches)
    assert "inference_batch_latency_micro_secs" in names and "load_model_latency_milli_secs" in names


def test_handler_checks_latent_size_and_labels(bundled):
    handler = VAEDecoderHandler("bundled", batch_size=8)
    model = handler.load_model()
    with pytest.raises(ValueError, match="latent vectors of size"):
        handler.run_inference([np.zeros((2, bundled.latent_dim + 1), np.float32)], model)
    with pytest.raises(ValueError, match="one label per latent row"):
        handler.run_inference([(np.zeros((2, bundled.latent_dim), np.float32), [1])], model)
    single = handler.run_inference([np.zeros(bundled.latent_dim, np.float32)], model)[0]
    assert single.inference.shape == tuple(bundled.image_shape) and single.inference.dtype == np.uint8
