"""`vae-augment`: one CLI for training, class statistics, generation, evaluation and preview."""
from __future__ import annotations

import sys

from pipeline.logs import quiet_libraries

# Before anything imports TensorFlow: keep its C++ start-up chatter off users' terminals.
quiet_libraries(verbose=bool({"-v", "--verbose"} & set(sys.argv[1:2])))

import click  # noqa: E402

from vae_model.errors import UserError  # noqa: E402
from vae_model.latent_stats import POSTERIOR_PER_CLASS  # noqa: E402
from vae_model.pseudo_label import DEFAULT_MIN_CONFIDENCE as DEFAULT_PSEUDO_CONFIDENCE  # noqa: E402
from vae_model.pseudo_label import DEFAULT_NEIGHBOURS  # noqa: E402


class _Group(click.Group):
    """Turns our UserErrors into a one-line message and an exit code; no traceback for user mistakes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show library logs (TensorFlow, Beam) as well.")
@click.pass_context
def cli(ctx, verbose):
    """Train a VAE on digits and generate synthetic labeled datasets with Apache Beam."""
    ctx.obj = {"verbose": verbose}


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML model/training config (see configs/); default: the built-in default config.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (replaced atomically when training succeeds).")
@click.option("--data", default=None, help="Training data source, e.g. mnist, csv:train.csv, idx:DIR, npz:FILE "
                                           "(overrides train.data in the config).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.epochs=5 --set model.latent_dim=2. Repeatable.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config_path, out_dir, data, overrides, quiet):
    """Train a VAE and write MODEL_DIR (models, metrics, latent stats, plots)."""
    from vae_model.config import load_config

    overrides = list(overrides) + ([f"train.data={_yaml_str(data)}"] if data else [])
    cfg = load_config(config_path, overrides)
    from vae_model.training import train as run_training

    meta = run_training(cfg, out_dir, verbose=0 if quiet else ("auto" if sys.stdout.isatty() else 2))
    test = meta["metrics"].get("test")
    click.echo(f"model {meta['model_id']} written to {out_dir} in {meta['train_seconds']} s")
    if test:
        click.echo(f"test -ELBO {test['neg_elbo']:.2f} ({test['unit']}) = reconstruction {test['reconstruction']:.2f}"
                   f" + KL {test['kl']:.2f} over {test['images']} images")


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} must be comma-separated integers, e.g. 0,3,7") from None
    if not out:
        raise click.BadParameter("give at least one class, e.g. 0,3,7")
    return out


def _formats(ctx, param, value):
    from pipeline.generate.graph import FORMATS
    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise click.BadParameter(f"{value!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return out


def _positive(ctx, param, value):
    import math
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise click.BadParameter(f"must be a positive number, got {value}")
    return value


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--model", default=None, help="Model directory (local or gs://); default: the bundled MNIST model.")
@click.option("--out", required=True, help="Output directory (local or gs://) for shards and manifest.json.")
@click.option("--num", type=int, default=None, help="Total records, spread over the classes as evenly as possible.")
@click.option("--per-class", type=int, default=None, help="Exactly this many records for each class in --classes.")
@click.option("--sampler", type=click.Choice(["prior", "centroid", "classgauss", "posterior", "gmm", "conditional"]),
              default="posterior", show_default=True, help="How latent codes are drawn (see the README's "
                                                           "sampler comparison).")
@click.option("--classes", callback=_int_list, default=None, help="Comma-separated classes (default: all).")
@click.option("--spread", type=float, default=None, callback=_positive,
              help="Scale of the noise around the class centre / example / prior; default 1.25 for posterior, "
                   "1.0 for the others.")
@click.option("--labeled-data", default=None, help="Compute class statistics from this source inside the job "
                                                    "(e.g. mnist, csv:FILE) instead of the model directory's.")
@click.option("--stats", "stats_path", default=None, help="Class statistics file from `vae-augment stats`.")
@click.option("--gmm-components", type=int, default=3, show_default=True, help="Mixture size for --sampler gmm.")
@click.option("--seed", type=int, default=0, show_default=True, help="Job seed; same seed, same records.")
@click.option("--formats", default="parquet,tfrecord", show_default=True, callback=_formats,
              help="Comma-separated output formats.")
@click.option("--shards", type=int, default=None, help="Shards per format (default: one per 50,000 records).")
@click.option("--batch-size", type=int, default=4096, show_default=True,
              help="Records per work unit and decoder batch.")
@click.option("--runner", type=click.Choice(["DirectRunner", "DataflowRunner", "BundleBasedDirectRunner"]),
              default="DirectRunner", show_default=True,
              help="Beam runner. BundleBasedDirectRunner is local and retries failed bundles like Dataflow.")
@click.option("--workers", type=int, default=None, help="Local worker processes, or Dataflow workers.")
@click.option("--gpu", default=None, help="Dataflow GPU type, e.g. nvidia-l4 (adds the accelerator service option "
                                          "and resource hint).")
@click.option("--filter-classifier", default=None, metavar="CLF_DIR",
              help="Keep only records this classifier (a `train-classifier` directory, or 'bundled') assigns to "
                   "their label with probability >= --min-confidence; each class is topped back up to its count.")
@click.option("--min-confidence", type=float, default=None,
              help="Threshold for --filter-classifier, in (0, 1]; default 0.9.")
@click.option("--max-filter-rounds", type=int, default=40, show_default=True,
              help="With --filter-classifier: rounds of candidates a work unit may decode before the job fails "
                   "(raise it for --sampler prior, where each class is a small share of the samples).")
@click.option("--overwrite", is_flag=True, help="Replace another job's output in --out.")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def generate(beam_args, **kw):
    """Sample latent codes, decode them in batches with Beam, write Parquet/TFRecord shards + manifest.

    Unknown options (BEAM_ARGS) go to Beam's PipelineOptions, e.g. --direct_running_mode=multi_processing
    or --project/--region/--temp_location for Dataflow.
    """
    from pipeline.generate.graph import GenerateJob, run_job

    for name in ("num", "per_class", "batch_size", "shards", "workers", "max_filter_rounds"):
        if kw[name] is not None and kw[name] <= 0:
            raise click.BadParameter(f"must be > 0, got {kw[name]}", param_hint=f"--{name.replace('_', '-')}")
    bad = [a for a in beam_args if not a.startswith("--")]
    if bad:
        raise click.UsageError(f"unexpected argument {bad[0]!r}; Beam options look like --name=value")
    job = GenerateJob(out=kw["out"], model=kw["model"], num=kw["num"], per_class=kw["per_class"],
                      sampler=kw["sampler"], classes=kw["classes"], spread=kw["spread"],
                      labeled_data=kw["labeled_data"], stats=kw["stats_path"], gmm_components=kw["gmm_components"],
                      seed=kw["seed"], formats=kw["formats"], shards=kw["shards"], batch_size=kw["batch_size"],
                      runner=kw["runner"], workers=kw["workers"], gpu=kw["gpu"], overwrite=kw["overwrite"],
                      filter_classifier=kw["filter_classifier"], min_confidence=kw["min_confidence"],
                      max_filter_rounds=kw["max_filter_rounds"])
    m = run_job(job, list(beam_args))
    if m.get("dry_run"):
        click.echo("Dataflow job built (dry run); nothing submitted")
        return
    click.echo(f"wrote {m['total']:,} records to {job.out} in {m['elapsed_seconds']:.1f} s "
               f"({m['images_per_second']:,.0f} images/s)")
    click.echo("per class: " + ", ".join(f"{c}: {n:,}" for c, n in m["per_class"].items()))
    if "filter" in m:
        f = m["filter"]
        click.echo(f"filter (min confidence {f['min_confidence']}): {f['acceptance']:.1%} of {f['drawn']:,} decoded "
                   "candidates passed; per class: "
                   + ", ".join(f"{c}: {v['acceptance']:.1%}" for c, v in f["per_class"].items()))
    for fmt in m["formats"]:
        n = sum(1 for s in m["shards"] if s["format"] == fmt)
        click.echo(f"{fmt}: {n} shards under {job.out}/{fmt}/")
    click.echo(f"manifest: {job.out}/manifest.json (dataset_digest {m['dataset_digest'][:16]}...)")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--model", default=None, help="Model directory; default: the bundled MNIST model.")
@click.option("--data", required=True, help="Labeled data source, e.g. mnist or csv:train.csv.")
@click.option("--out", required=True, help="Statistics file to write (.npz).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the per-example pool selection.")
@click.option("--pool-per-class", type=int, default=POSTERIOR_PER_CLASS, show_default=True,
              help="Encodings kept per class for the posterior and gmm samplers; raise it for a large "
                   "(e.g. pseudo-labeled) source so every example can anchor samples.")
@click.option("--near-dup-threshold", default=None, metavar="auto|D",
              help="Drop pool anchors whose reconstruction lies within D (L2, pixels in [0, 1]) of a training image "
                   "of --data; 'auto' = the 1st percentile of the source's real test-to-train distances, the "
                   "evaluate report's near-duplicate rule.")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def stats(model, data, out, seed, pool_per_class, near_dup_threshold, beam_args):
    """Encode labeled data with Beam and write per-class latent statistics."""
    from pipeline.generate.class_stats import ComputeClassStats, save_stats
    from vae_model.model_dir import ModelDir

    prune = near_dup_threshold is not None
    if prune:
        from pipeline.generate.anchor_novelty import parse_threshold, prune_for_source
        threshold = parse_threshold(near_dup_threshold)  # a usage error before any work
    md = ModelDir.open(model)
    s = ComputeClassStats.run_local(md, data, seed, list(beam_args), out_path=None if prune else out,
                                    pool_per_class=pool_per_class)
    if prune:
        s, report, threshold = prune_for_source(s, md, data, seed, threshold)
        save_stats(s, out)
        click.echo(f"near-duplicate anchors (reconstruction within {threshold:.3f} of a training image) dropped: "
                   + ", ".join(f"{c}: {v['dropped']}/{v['kept'] + v['dropped']}" for c, v in report.items()))
    click.echo(f"statistics of {int(s.counts.sum()):,} labeled images in {len(s.classes)} classes written to {out} "
               f"(posterior pool: {len(s.post_labels):,} encodings)")


@cli.command("pseudo-label")
@click.option("--data", required=True,
              help="Source with a few labels and many unlabeled rows, e.g. 'mnist?labeled_per_class=100'.")
@click.option("--classifier", "classifier_dir", required=True,
              help="Classifier directory (from train-classifier) trained on the labeled rows; 'bundled' = the "
                   "bundled MNIST classifier.")
@click.option("--model", default=None, help="Unconditional VAE directory trained on all the images, labeled or not; "
                                            "default: the bundled MNIST model.")
@click.option("--out", required=True, help="npz file to write: a data source (npz:PATH) with the pseudo-labels.")
@click.option("--neighbours", type=int, default=DEFAULT_NEIGHBOURS, show_default=True,
              help="Latent nearest neighbours whose classifier probabilities are averaged (0 = the classifier alone).")
@click.option("--min-confidence", type=float, default=DEFAULT_PSEUDO_CONFIDENCE, show_default=True,
              help="Averaged probability a row needs to get a pseudo-label; the rest stay unlabeled.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the source's options "
                                                                      "(e.g. which rows labeled_per_class keeps).")
def pseudo_label_cmd(data, classifier_dir, model, out, neighbours, min_confidence, seed):
    """Label the unlabeled rows of a source with a classifier, smoothed over the VAE's latent neighbours; write a
    new source for `stats`, `generate --labeled-data` and `train-classifier`."""
    from vae_model.pseudo_label import make_pseudo_labeled_source

    m = make_pseudo_labeled_source(data, None if classifier_dir == "bundled" else classifier_dir, out, model,
                                   neighbours, min_confidence, seed)
    click.echo(f"{m['pseudo_labels']:,} of {m['pseudo_labels'] + m['left_unlabeled']:,} unlabeled rows pseudo-labeled "
               f"(averaged confidence >= {min_confidence}), {m['real_labels']:,} real labels kept; written to {out} "
               f"in {m['seconds']} s")
    click.echo("per class: " + ", ".join(f"{c}: {n:,}" for c, n in m["pseudo_per_class"].items()))


@cli.command()
@click.argument("out_dir")
@click.option("--png", required=True, help="PNG file to write.")
@click.option("--per-class", type=int, default=12, show_default=True, help="Images per row.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "tfrecord"]), default="parquet",
              show_default=True, help="Which shards to read.")
def preview(out_dir, png, per_class, fmt):
    """Draw a PNG grid from the shards, one row per class."""
    from pipeline.evaluation.preview import write_preview

    rows = write_preview(out_dir, png, per_class, fmt)
    click.echo(f"preview of {rows} classes written to {png}")


@cli.command()
@click.argument("out_dir")
def verify(out_dir):
    """Check shards against the manifest and every record; exit 1 listing each problem."""
    from pipeline.dataset.verify import verify_output

    problems = verify_output(out_dir)
    if problems:
        for p in problems:
            click.echo(f"FAIL {p}", err=True)
        click.echo(f"{out_dir}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{out_dir}: OK (every shard matches the manifest, records valid, digest matches)")


@cli.command("train-classifier")
@click.option("--data", required=True, help="Labeled real data source, e.g. mnist, csv:train.csv, idx:DIR; only "
                                            "labeled rows train it, the source's test split scores it.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Classifier directory to write (classifier.keras + classifier.json; replaced atomically).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML classifier config (see configs/classifier.yaml); default: the built-in one, the same.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.epochs=2 --set model.dense_units=64. Repeatable.")
@click.option("--synthetic", "synthetic_dir", default=None,
              help="A generate output directory (TFRecord shards) to mix into training: a real classifier trained "
                   "with augmentation. An epoch stays one pass over the real images.")
@click.option("--real-share", type=float, default=None,
              help="With --synthetic: share of real images in each batch, in (0, 1) [default: 0.5].")
@click.option("--init", "init_dir", default=None,
              help="Start from this classifier directory's weights instead of fresh ones (fine-tuning), e.g. one "
                   "trained on synthetic shards with --data OUT_DIR; same architecture required.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_classifier_cmd(data, out_dir, config_path, overrides, synthetic_dir, real_share, init_dir, quiet):
    """Train the reference CNN classifier (used by evaluate and the classifier filter) on real labeled data,
    optionally mixed with synthetic shards."""
    from vae_model.classifier import check_real_share, load_classifier_config, train_classifier
    from vae_model.errors import UsageError

    if real_share is not None and synthetic_dir is None:
        raise UsageError("--real-share mixes real and synthetic images; pass --synthetic OUT_DIR with it")
    cfg = load_classifier_config(config_path, overrides)
    extra = {}
    if synthetic_dir is not None:
        real_share = 0.5 if real_share is None else real_share
        check_real_share(real_share)
        extra = _synthetic_stream(synthetic_dir, cfg)
    meta = train_classifier(data, out_dir, cfg, verbose=0 if quiet else ("auto" if sys.stdout.isatty() else 2),
                            real_share=real_share, init=init_dir, **extra)
    rows = (f"{meta['rows']:,} images per epoch, {real_share:.0%} real" if extra
            else f"{meta['rows']:,} labeled images")
    click.echo(f"classifier {meta['classifier_id']} written to {out_dir} in {meta['train_seconds']} s ({rows}, "
               f"{meta['steps']:,} steps)")
    test = meta["metrics"].get("test")
    if test:
        click.echo(f"test accuracy {test['accuracy']:.2%} on {test['images']:,} images")
    else:
        click.echo(f"{data} has no labeled test split: no test accuracy recorded")


@cli.command("evaluate")
@click.argument("out_dir")
@click.option("--real", "real_source", required=True,
              help="Real labeled data to compare against, e.g. mnist (its train split is the novelty/diversity "
                   "reference and trains the CAS ceiling, its test split scores CAS).")
@click.option("--classifier", "classifier_dir", default=None,
              help="Reference classifier directory from train-classifier; default: the bundled MNIST classifier.")
@click.option("--report", "report_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for report.html, report.json and figures/ (new, empty or an earlier report; "
                   "replaced atomically).")
@click.option("--cas-epochs", type=click.IntRange(min=0), default=None,
              help="Epochs of CAS training over the synthetic records (default: the classifier's config; 0 skips CAS).")
@click.option("--cas-max-steps", type=click.IntRange(min=0), default=None,
              help="Cap on CAS optimizer steps (default: the classifier's config, 0 = no cap).")
@click.option("--max-images", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Synthetic records sampled for fidelity, diversity and pictures (counts use every record).")
@click.option("--novelty-images", type=click.IntRange(min=1), default=5_000, show_default=True,
              help="Synthetic images whose exact nearest real training image is searched.")
@click.option("--baseline-images", type=click.IntRange(min=1), default=5_000, show_default=True,
              help="Real test images searched the same way, as the novelty baseline.")
@click.option("--diversity-per-class", type=click.IntRange(min=2), default=500, show_default=True,
              help="Images per class for the mean within-class pairwise distance.")
@click.option("--near-dup-threshold", type=float, default=None,
              help="Near-duplicate distance (L2 over pixels in [0, 1]); default: the 1st percentile of the real "
                   "test-to-train distances.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the subsamples.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def evaluate_cmd(out_dir, real_source, classifier_dir, report_dir, cas_epochs, cas_max_steps, max_images,
                 novelty_images, baseline_images, diversity_per_class, near_dup_threshold, seed, quiet):
    """Score a generated dataset against real data (counts, label fidelity, CAS, novelty, diversity); write a
    self-contained HTML report."""
    from pipeline.evaluation.evaluate import evaluate

    r = evaluate(out_dir, real_source, classifier_dir, report_dir, cas_epochs=cas_epochs, cas_max_steps=cas_max_steps,
                 max_images=max_images, novelty_images=novelty_images, baseline_images=baseline_images,
                 diversity_per_class=diversity_per_class, near_dup_threshold=near_dup_threshold, seed=seed,
                 log=None if quiet else (lambda msg: click.echo(msg, err=True)), verbose=0 if quiet else 2)
    f, cas, nov, div = r["fidelity"], r["cas"], r["novelty"], r["diversity"]
    click.echo(f"evaluated {r['counts']['total']:,} records of {out_dir} against {real_source} "
               f"in {r['timings']['metrics_total']:.0f} s")
    if not r["counts"]["match"]:
        click.echo("WARNING the shards disagree with the manifest: " + "; ".join(r["counts"]["problems"][:3]))
    if f["applicable"]:
        per = [v["fidelity"] for v in f["per_class"].values()]
        click.echo(f"label fidelity {f['fidelity']:.2%} (classes {min(per):.1%}..{max(per):.1%}; the classifier "
                   f"scores {f['classifier_accuracy_on_real_test']:.2%} on real test images)")
    else:
        click.echo(f"label fidelity: n/a ({f['reason']})")
    if cas["applicable"]:
        click.echo(f"CAS {cas['cas']:.2%} vs ceiling {cas['ceiling']:.2%} (same architecture on real training data)")
    else:
        click.echo(f"CAS: n/a ({cas['reason']})")
    click.echo(f"novelty: {nov['exact_duplicates']:,} exact duplicates of real training images; near-duplicate rate "
               f"{nov['near_duplicate_rate']:.2%} (real test baseline {nov['baseline_near_duplicate_rate']:.2%}, "
               f"distance < {nov['near_duplicate_threshold']:.2f})")
    if div["applicable"]:
        click.echo(f"diversity: within-class distance {div['synthetic_mean']:.2f} vs real {div['real_mean']:.2f} "
                   f"(ratio {div['mean_ratio']:.2f})")
    else:
        click.echo(f"diversity: pooled ratio {div['pooled']['ratio']:.2f} (unlabeled records)")
    click.echo(f"report: {report_dir}/report.html")


def _synthetic_stream(out_dir: str, cfg) -> dict:
    """The TFRecord records of a generate output as a training stream, checked against the classifier config."""
    from pipeline.dataset.readers import read_manifest, tfrecord_dataset
    from vae_model.errors import DataError

    m = read_manifest(out_dir)
    labels = [int(c) for c in m.get("per_class", {}) if int(c) >= 0]
    if not labels:
        raise DataError(f"--synthetic {out_dir} has no labeled records (prior samples without a filter); generate "
                        "with a class sampler or --filter-classifier")
    if max(labels) >= cfg.model.num_classes:
        raise DataError(f"--synthetic {out_dir} has label {max(labels)} but the classifier has "
                        f"{cfg.model.num_classes} classes; raise model.num_classes")
    info = {"dir": out_dir, "dataset_digest": m.get("dataset_digest"), "records": m.get("total"),
            "image_shape": [int(m["height"]), int(m["width"])]}
    return {"synthetic": tfrecord_dataset(out_dir), "synthetic_info": info}


def _yaml_str(s: str) -> str:
    import json
    return json.dumps(s)  # JSON strings are YAML strings; keeps ':' and '?' in sources intact


def main(argv=None):
    cli.main(args=argv, prog_name="vae-augment")


if __name__ == "__main__":
    main()
