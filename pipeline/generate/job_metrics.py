"""The generate job's own Beam metrics (namespace vae_augment: counters such as `records` and `nonfinite_pixels`,
distributions such as `decode_batch_ms` and `model_load_ms`), read from a PipelineResult and put in two short
lines for the end of `vae-augment generate`."""
from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter

from pipeline.generate.transforms import NAMESPACE

_COUNTER_ORDER = ("records", "nonfinite_pixels")  # then any other counter, by name
_DISTRIBUTION_ORDER = ("decode_batch_ms", "model_load_ms")


def _value(result):
    # committed where the runner reports it (FnApiRunner, Dataflow's counters), else attempted
    return result.committed if result.committed is not None else result.attempted


def job_metrics(pipeline_result) -> dict:
    """{"counters": {name: int}, "distributions": {name: {count, sum, min, max, mean}}}, summed over the steps
    that report each metric; empty when the runner cannot say (a dry run, a runner without metrics)."""
    try:
        found = pipeline_result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # noqa: BLE001 - metrics are a report; never fail the job over them
        return {"counters": {}, "distributions": {}}
    counters: dict[str, int] = {}
    for r in found.get("counters", []):
        v = _value(r)
        if v is not None:
            counters[r.key.metric.name] = counters.get(r.key.metric.name, 0) + int(v)
    dists: dict[str, dict] = {}
    for r in found.get("distributions", []):
        v = _value(r)
        if v is None or not v.count:
            continue
        d = dists.setdefault(r.key.metric.name, {"count": 0, "sum": 0, "min": v.min, "max": v.max})
        d.update(count=d["count"] + v.count, sum=d["sum"] + v.sum, min=min(d["min"], v.min), max=max(d["max"], v.max))
    for d in dists.values():
        d["mean"] = d["sum"] / d["count"]
    return {"counters": counters, "distributions": dists}


def _ordered(names, first):
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


def metric_lines(pipeline_result) -> list[str]:
    """At most two lines: the counters, then each distribution as count, mean, min and max; [] if there are none."""
    m = job_metrics(pipeline_result) if pipeline_result is not None else {"counters": {}, "distributions": {}}
    lines = []
    c = m["counters"]
    if "records" in c:
        c.setdefault("nonfinite_pixels", 0)  # Beam reports no counter never incremented: none was found
    if c:
        lines.append("job metrics: " + ", ".join(f"{n} {c[n]:,}" for n in _ordered(c, _COUNTER_ORDER)))
    d = m["distributions"]
    if d:
        lines.append("  " + "; ".join(f"{n} n={d[n]['count']:,} mean {d[n]['mean']:,.1f} min {d[n]['min']:,} "
                                      f"max {d[n]['max']:,}" for n in _ordered(d, _DISTRIBUTION_ORDER)))
    return lines
