"""The generation stage (pipeline/generate/transforms.py) on a few work units, in one local TestPipeline each."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.generate.planning import ShardTask, WorkUnit, plan_shard_tasks, plan_units
from pipeline.generate.samplers import SamplerSpec
from pipeline.generate.transforms import GenerateShards, SampleLatents, sample_unit
from vae_model.latent_stats import LatentStats


def _records(batches):
    return sorted((int(i), int(lab), img.tobytes(), z.tobytes()) for b in batches
                  for i, lab, img, z in zip(b.ids, b.labels, b.images, b.latents))


def _decoded_by_hand(bundled, sampler, units, seed, capacity):
    from pipeline.dataset.batch import RecordBatch
    from vae_model.inference import BatchDecoder

    dec = BatchDecoder(bundled.decoder, capacity)
    for u in units:
        z, labels = sample_unit(sampler, seed, u)
        images, _ = dec(z, labels)
        yield RecordBatch(u.unit_id * capacity + np.arange(u.count), labels, images, z,
                          "classgauss", bundled.model_id, seed)


def test_sample_latents_draws_from_seed_and_unit_id(classgauss, local_pipeline):
    units = [WorkUnit(0, (1,), (5,)), WorkUnit(1, (2, 4), (1, 3))]
    expected = [(u.unit_id, z.tobytes(), labels.tolist())
                for u in units for z, labels in [sample_unit(classgauss, 9, u)]]
    assert sorted(expected[1][2]) == [2, 4, 4, 4]
    with local_pipeline() as p:
        out = (p | beam.Create(units) | SampleLatents(classgauss, 9)
               | beam.Map(lambda uzl: (uzl[0].unit_id, uzl[1].tobytes(), uzl[2].tolist())))
        assert_that(out, equal_to(expected))


@pytest.mark.parametrize("threads", [0, 2])
def test_generate_shards_yields_each_units_records_keyed_by_shard(bundled, classgauss, local_pipeline, threads):
    units = plan_units({2: 40, 5: 9}, 16)  # 4 units of 12-13, classes mixed
    tasks = plan_shard_tasks(units, 3) + [ShardTask(3, 4, ())]  # plus an empty task
    want = _records(_decoded_by_hand(bundled, classgauss, units, 4, 16))
    with local_pipeline() as p:
        keyed = p | beam.Create(tasks) | GenerateShards(classgauss, 4, bundled.path, 16, bundled.model_id,
                                                        "classgauss", 16, 49, decode_threads=threads)
        # per task: its units' ids, in unit order; the empty task yields one empty batch
        ids = keyed | beam.Map(lambda kv: (kv[0], [int(i) for i in kv[1].ids]))
        assert_that(ids, equal_to([(u.unit_id % 3, [u.unit_id * 16 + i for i in range(u.count)]) for u in units]
                                  + [(3, [])]), label="ShardsAndIds")
        records = keyed | beam.Values() | beam.combiners.ToList() | beam.Map(_records)
        assert_that(records, equal_to([want]), label="Records")


def test_a_sampler_built_on_the_workers_from_a_statistics_side_input(bundled, classgauss, local_pipeline):
    """GenerateShards(SamplerSpec, stats=side input) gives the records of the same sampler built beforehand."""
    spec = SamplerSpec("classgauss", bundled.latent_dim, False, 1.0, 3, 4, "test")
    units = plan_units({2: 20, 5: 9}, 16)
    want = _records(_decoded_by_hand(bundled, classgauss, units, 4, 16))
    full = bundled.stats()
    two = [full.index_of(2), full.index_of(5)]  # the moments only: classgauss needs no pool, and Create is cheaper
    stats = LatentStats(full.classes[two], full.counts[two], full.means[two], full.covs[two], full.global_count,
                        full.global_mean, full.global_cov)
    with local_pipeline() as p:
        stats = beam.pvalue.AsSingleton(p | "Stats" >> beam.Create([stats]))
        keyed = p | beam.Create(plan_shard_tasks(units, 2)) | GenerateShards(
            spec, 4, bundled.path, 16, bundled.model_id, "classgauss", 16, 29, stats=stats)
        assert_that(keyed | beam.Values() | beam.combiners.ToList() | beam.Map(_records), equal_to([want]))


def _posterior(bundled):
    from pipeline.generate.samplers import build_sampler

    return build_sampler("posterior", bundled.latent_dim, False, bundled.stats(), spread=1.0)


def test_the_posterior_pool_is_read_on_the_workers_not_pickled(bundled, local_pipeline):
    """A StatsFileSampler (what generate ships for --sampler posterior) pickles a path and a checksum, and the
    workers' sampler gives the records of the one built on the driver."""
    import hashlib

    from apache_beam.internal import pickler

    from pipeline.generate.samplers import StatsFileSampler
    from vae_model.artifacts import read_bytes

    driver = _posterior(bundled)
    spec = SamplerSpec("posterior", bundled.latent_dim, False, 1.0, 3, 4, "test")
    sha = hashlib.sha256(read_bytes(bundled.file("latent_stats.npz"))).hexdigest()
    ref = StatsFileSampler(spec, bundled.path, None, sha)
    assert len(pickler.dumps(ref)) < 5_000 < len(pickler.dumps(driver)) // 100
    units = plan_units({2: 20, 5: 9}, 16)
    want = _records(_decoded_by_hand(bundled, driver, units, 4, 16))
    with local_pipeline() as p:
        keyed = p | beam.Create(plan_shard_tasks(units, 2)) | GenerateShards(
            ref, 4, bundled.path, 16, bundled.model_id, "classgauss", 16, 29, decode_threads=0)
        assert_that(keyed | beam.Values() | beam.combiners.ToList() | beam.Map(_records), equal_to([want]))


def test_a_worker_whose_statistics_differ_from_the_drivers_is_refused(bundled, tmp_path):
    import shutil

    from pipeline.generate.samplers import StatsFileSampler
    from vae_model.errors import ModelError

    copy = tmp_path / "stats.npz"
    shutil.copy(bundled.file("latent_stats.npz"), copy)
    spec = SamplerSpec("posterior", bundled.latent_dim, False, 1.0, 3, 4, "test")
    with pytest.raises(ModelError, match="differ from the ones the job was planned with"):
        StatsFileSampler(spec, bundled.path, str(copy), "0" * 64).build()


def test_record_batches_have_a_coder_with_a_cheap_size_estimate():
    from apache_beam.coders import registry

    from pipeline.dataset.batch import RecordBatch
    from pipeline.generate.coders import RecordBatchCoder
    from tests.pipeline.dataset.test_dataset_codecs import make_batch

    batch = make_batch(np.random.default_rng(0), n=50)
    coder = registry.get_coder(RecordBatch)
    assert isinstance(coder, RecordBatchCoder)
    back = coder.decode(coder.encode(batch))
    for f in ("ids", "labels", "images", "latents"):
        assert getattr(back, f).tobytes() == getattr(batch, f).tobytes()
    assert (back.sampler, back.model_id, back.seed) == (batch.sampler, batch.model_id, batch.seed)
    assert abs(coder.estimate_size(batch) - len(coder.encode(batch))) < 1_000
