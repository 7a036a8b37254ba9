"""Fixtures of the generate tests: Beam's local runner in one process, and whole jobs with small batches."""
import pytest

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture
def local_args():
    """Beam arguments for an in-process local run."""
    return list(LOCAL)


@pytest.fixture(scope="session")
def local_pipeline():
    """local_pipeline() -> a TestPipeline on the in-process FnApiRunner (the default DirectRunner would first try,
    and offline fail, to fetch Prism)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipeline.generate.runners import make_runner

    def make():
        options = PipelineOptions(LOCAL)
        return TestPipeline(runner=make_runner(options), options=options)
    return make


@pytest.fixture
def generate():
    """generate(out, beam_args=LOCAL, **GenerateJob fields) -> manifest of a whole job (batch size 64 by default)."""
    from pipeline.generate.graph import run_job
    from pipeline.generate.job import GenerateJob

    def run(out, beam_args=LOCAL, **kw):
        kw.setdefault("batch_size", 64)
        return run_job(GenerateJob(out=str(out), **kw), list(beam_args))
    return run


@pytest.fixture(scope="session")
def classgauss(bundled):
    """The classgauss sampler (spread 1) of the bundled model's statistics."""
    from pipeline.generate.samplers import build_sampler
    return build_sampler("classgauss", bundled.latent_dim, False, bundled.stats(), spread=1.0)
