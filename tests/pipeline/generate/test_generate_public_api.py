"""The public transforms for Beam users (pipeline.generate.api): argument checks, OUT's ownership and lock, the job
graph built from them; a user's own `p | GenerateRecords(...) | WriteShards(out)` against `verify` and `generate`;
and the job metrics `generate` prints at its end."""
import os
import re

import apache_beam as beam
import pytest
from apache_beam.metrics.cells import DistributionData, DistributionResult
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName
from apache_beam.testing.util import assert_that, equal_to
from click.testing import CliRunner

from pipeline.dataset import layout
from pipeline.generate.api import GenerateRecords, WriteShards
from pipeline.generate.job_metrics import job_metrics, metric_lines
from vae_model.errors import UsageError

JOB = dict(per_class=50, shards=2, seed=3, batch_size=64)  # 500 records of classes 0..9


@pytest.fixture(scope="module")
def records_of_job():
    """GenerateRecords(**JOB), opened and validated once (it loads the decoder)."""
    return GenerateRecords(**JOB)


@pytest.mark.parametrize("kw,needle", [
    (dict(num={0: 5}), "Expected num to be an int or None, Received: num={0: 5}"),
    (dict(per_class=5, classes="3"), "Expected classes to be a list of ints or None, Received: classes='3'"),
    (dict(per_class=5, seed=1.5), "Received: seed=1.5"),
    (dict(model=7, per_class=5), "Expected model to be a model directory"),
])
def test_generate_records_refuses_arguments_of_the_wrong_type(kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)) as e:
        GenerateRecords(**kw)
    assert "\n" not in str(e.value)


def test_generate_records_is_checked_by_generates_own_validate():
    with pytest.raises(UsageError, match="exactly one of --num"):
        GenerateRecords(num=5, per_class=5)
    with pytest.raises(UsageError, match="--classes 12 is not a class"):
        GenerateRecords(per_class=5, classes=[12])


def test_generate_records_plans_what_generate_plans(records_of_job):
    assert records_of_job.num_shards == 2 and records_of_job.counts == {c: 50 for c in range(10)}
    assert GenerateRecords(num=25, classes=[7, 3]).counts == {3: 13, 7: 12}


@pytest.mark.parametrize("kw,needle", [
    (dict(out=""), "Expected out to be a folder path or gs:// URL, Received: out=''"),
    (dict(out="o", formats=["csv"]), r"Expected formats to be a non-empty subset of .*Received: formats=\['csv'\]"),
    (dict(out="o", formats=[]), re.escape("Received: formats=[]")),
])
def test_write_shards_refuses_bad_arguments(kw, needle):
    with pytest.raises(ValueError, match=needle):
        WriteShards(**kw)


def test_write_shards_takes_only_the_output_of_generate_records(tmp_path):
    p = beam.Pipeline()
    with pytest.raises(ValueError, match="Expected the output of GenerateRecords .*Received: records produced by "
                                         "'NotOurs"):
        _ = p | "NotOurs" >> beam.Create([1]) | WriteShards(str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_write_shards_refuses_a_folder_it_did_not_write_and_leaves_no_lock(tmp_path, records_of_job):
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text('{"mine": 1}')
    p = beam.Pipeline()
    with pytest.raises(UsageError, match="holds files vae-augment did not write: manifest.json"):
        _ = p | records_of_job | WriteShards(str(out))
    assert (out / "manifest.json").read_text() == '{"mine": 1}'
    assert not os.path.exists(layout.lock_path(str(out)))


def test_the_generate_job_is_built_from_the_public_transforms(tmp_path, bundled):
    """graph.build is GenerateRecords | WriteShards(publish=False): same stages, no Publish step (run_job
    publishes after the pipeline)."""
    from pipeline.generate.graph import build
    from pipeline.generate.job import GenerateJob, validate

    job = GenerateJob(out=str(tmp_path / "o"), per_class=5, classes=[1, 2], formats=["parquet"])
    p = beam.Pipeline()
    build(p, job, bundled, validate(job, bundled))
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    assert "Generate/DecodeLatents/SampleAndDecode" in names
    assert any(n.startswith("Write/WriteParquet/") for n in names) and "Write/WriteSummary" in names
    assert not any("Publish" in n or "WriteTFRecord" in n for n in names)
    assert not (tmp_path / "o").exists()  # building the CLI's graph touches nothing: run_job prepares OUT


def _result(counters=(), distributions=()):
    def key(name, step="s"):
        return MetricKey(step, MetricName("vae_augment", name))

    found = {"counters": [MetricResult(key(n, s), v, v) for s, n, v in counters],
             "distributions": [MetricResult(key(n, s), DistributionResult(DistributionData(*v)), None)
                               for s, n, v in distributions]}

    class Result:
        def metrics(self):
            class Query:
                def query(self, _filter):
                    return found
            return Query()
    return Result()


def test_job_metrics_are_summed_over_steps_and_printed_in_two_lines():
    result = _result(counters=[("a", "records", 300), ("b", "records", 200), ("a", "nonfinite_pixels", 0)],
                     distributions=[("a", "decode_batch_ms", (120, 4, 20, 40)),  # sum, count, min, max
                                    ("b", "decode_batch_ms", (30, 2, 10, 20)),
                                    ("a", "model_load_ms", (900, 1, 900, 900))])
    m = job_metrics(result)
    assert m["counters"] == {"records": 500, "nonfinite_pixels": 0}
    assert m["distributions"]["decode_batch_ms"] == {"count": 6, "sum": 150, "min": 10, "max": 40, "mean": 25.0}
    assert metric_lines(result) == [
        "job metrics: records 500, nonfinite_pixels 0",
        "  decode_batch_ms n=6 mean 25.0 min 10 max 40; model_load_ms n=1 mean 900.0 min 900 max 900"]


def test_a_clean_job_reports_zero_nonfinite_pixels():
    assert metric_lines(_result(counters=[("a", "records", 7)])) == ["job metrics: records 7, nonfinite_pixels 0"]


def test_job_metrics_never_fail_the_job():
    class NoMetrics:
        def metrics(self):
            raise NotImplementedError("this runner has no metrics")
    assert metric_lines(NoMetrics()) == [] and metric_lines(None) == [] and metric_lines(_result()) == []


@pytest.mark.e2e
def test_a_users_own_pipeline_writes_what_verify_accepts_and_generate_writes(tmp_path, local_pipeline, local_args):
    """The issue's Beam user: GenerateRecords | WriteShards in their own pipeline publish a manifest inside it;
    `vae-augment verify` accepts the output and `vae-augment generate` with the same arguments writes the same
    records (dataset digest), into that very folder without --overwrite, printing the job's metrics."""
    from pipeline.cli import cli

    mine = str(tmp_path / "mine")
    with local_pipeline() as p:
        manifests = p | GenerateRecords(**JOB) | WriteShards(mine)
        assert_that(manifests | beam.Map(lambda m: (m["total"], m["num_shards"])), equal_to([(500, 2)]))
    res = CliRunner().invoke(cli, ["verify", mine])
    assert res.exit_code == 0 and "OK" in res.output, res.output
    ours = layout.read_manifest(mine)
    assert ours["per_class"] == {str(c): 50 for c in range(10)} and ours["height"] == 28
    assert {s["format"] for s in ours["shards"]} == {"parquet", "tfrecord"} and len(ours["shards"]) == 4
    assert not os.path.exists(layout.lock_path(mine)) and not os.path.exists(layout.summary_dir(mine))
    assert os.path.exists(os.path.join(mine, "README.md"))  # the dataset card, as generate writes it

    args = ["--per-class", "50", "--shards", "2", "--seed", "3", "--batch-size", "64"]
    res = CliRunner().invoke(cli, ["generate", "--out", mine, *args, *local_args])
    assert res.exit_code == 0, res.output
    theirs = layout.read_manifest(mine)
    assert theirs["dataset_digest"] == ours["dataset_digest"] and theirs["fingerprint"] == ours["fingerprint"]
    assert "job metrics: records 500, nonfinite_pixels 0" in res.stderr and "decode_batch_ms n=" in res.stderr
    assert theirs["config"]["out"] == mine

    # another job's records are refused when the pipeline is built, before anything runs
    with pytest.raises(UsageError, match="already holds another job's manifest"):
        _ = beam.Pipeline() | GenerateRecords(**{**JOB, "seed": 4}) | WriteShards(mine)
    assert layout.read_manifest(mine)["dataset_digest"] == ours["dataset_digest"]


@pytest.mark.e2e
def test_a_failed_users_pipeline_publishes_nothing_and_its_lock_names_it(tmp_path, local_pipeline, monkeypatch):
    """No manifest after a failed pipeline; OUT's lock stays (no step after the failure can release it) and the next
    job says who holds it; once it is deleted, the same arguments take OUT again."""
    from pipeline.dataset.publish import OutputUnavailable

    out = str(tmp_path / "o")
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "decode:1:always")
    with pytest.raises(Exception, match="injected always fault in decode of work unit 1"):
        with local_pipeline() as p:
            _ = p | GenerateRecords(**JOB) | WriteShards(out)
    monkeypatch.delenv("VAE_AUGMENT_FAULTS")
    assert not os.path.exists(os.path.join(out, layout.MANIFEST))
    with pytest.raises(OutputUnavailable, match=f"pid {os.getpid()}.*delete {re.escape(layout.lock_path(out))}"):
        _ = beam.Pipeline() | GenerateRecords(**JOB) | WriteShards(out)
    os.remove(layout.lock_path(out))
    _ = beam.Pipeline() | GenerateRecords(**JOB) | WriteShards(out)  # built (OUT prepared, locked), never run
    assert os.path.exists(layout.lock_path(out))
