"""`vae-augment`: one CLI for training, class statistics, generation, evaluation and preview."""
from __future__ import annotations

import sys
import time

import click

from pipeline.generate.options import CONTEXT_SETTINGS as GENERATE_CONTEXT
from pipeline.generate.options import generate_options, job_from_options
from pipeline.logs import quiet_libraries
from pipeline.startup import exit_now, imports_without_gc
from vae_model.errors import UserError
from vae_model.latent_stats import POOL_PER_CLASS
from vae_model.pseudo_label import DEFAULT_NEIGHBOURS, DEFAULT_PSEUDO_LABEL_CONFIDENCE, LABELERS

# Nothing imported at module level may import TensorFlow: _Command quiets it first, unless -v.


class _Command(click.Command):
    """Quiets the libraries after the command's options are parsed and before its body imports TensorFlow, so
    `--help` and parse errors stay instant."""

    def invoke(self, ctx):
        # verify imports TensorFlow only to parse TFRecord records (it quiets it then, see verify)
        with imports_without_gc():
            quiet_libraries(ctx.find_root().params.get("verbose", False), tensorflow=ctx.info_name != "verify")
        return super().invoke(ctx)


class _Group(click.Group):
    """Turns our UserErrors into a one-line message and an exit code; no traceback for user mistakes."""

    command_class = _Command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show library logs (TensorFlow, Beam) as well.")
def cli(verbose):
    """Train a VAE on digits and generate synthetic labeled datasets with Apache Beam."""
    # -v is read by _Command.invoke, once the command's own options are parsed


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML model/training config (see configs/); default: the built-in default config.")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Model directory to write: new, empty or an earlier model directory (replaced atomically when "
                   "training succeeds).")
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


@cli.command(context_settings=GENERATE_CONTEXT)
@generate_options
def generate(beam_args, **kw):
    """Sample latent codes, decode them in batches with Beam, write Parquet/TFRecord shards + manifest.

    Other options (BEAM_ARGS) go to Beam's PipelineOptions, as --name value or --name=value, e.g.
    --direct_running_mode=multi_processing or --project/--region/--temp_location for Dataflow; one Beam cannot
    parse is an error.
    """
    from pipeline.dataset.layout import manifest_path
    from pipeline.generate.graph import run_job

    from pipeline.logs import filtered_stderr, process_started

    job, beam_args = job_from_options(beam_args, **kw)
    # Beam's worker processes print TensorFlow's native log lines as they import it; -v keeps them.
    with filtered_stderr(click.get_current_context().find_root().params.get("verbose", False)):
        m = run_job(job, beam_args)
    if m.get("dry_run"):
        click.echo("Dataflow job built (dry run); nothing submitted")
        return
    wall = time.time() - process_started()
    click.echo(f"wrote {m['total']:,} records to {job.out} in {wall:.1f} s ({m['total'] / wall:,.0f} records/s) "
               f"counting start-up; the job itself {m['elapsed_seconds']:.1f} s ({m['images_per_second']:,.0f}/s)")
    click.echo("per class: " + ", ".join(f"{c}: {n:,}" for c, n in m["per_class"].items()))
    if "filter" in m:
        f = m["filter"]
        click.echo(f"filter (min confidence {f['min_confidence']}): {f['acceptance']:.1%} of {f['drawn']:,} decoded "
                   "candidates passed; per class: "
                   + ", ".join(f"{c}: {v['acceptance']:.1%}" for c, v in f["per_class"].items()))
    for fmt in m["formats"]:
        n = sum(1 for s in m["shards"] if s["format"] == fmt)
        click.echo(f"{fmt}: {n} shards under {job.out}/{fmt}/")
    click.echo(f"manifest: {manifest_path(job.out)} (dataset_digest {m['dataset_digest'][:16]}...)")
    from pipeline.generate.job_metrics import metric_lines

    for line in metric_lines(m.get("result")):  # the job's Beam counters and distributions
        click.echo(line, err=True)


@cli.command(context_settings=GENERATE_CONTEXT)
@click.option("--model", default=None, help="Model directory, or 'bundled' (the default): the bundled MNIST model.")
@click.option("--data", required=True, help="Labeled data source, e.g. mnist or csv:train.csv.")
@click.option("--out", required=True, help="Statistics file to write (.npz).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the per-example pool selection.")
@click.option("--pool-per-class", type=int, default=POOL_PER_CLASS, show_default=True,
              help="Encodings kept per class for the posterior and gmm samplers; raise it for a large "
                   "(e.g. pseudo-labeled) source so every example can anchor samples.")
@click.option("--near-dup-threshold", default=None, metavar="auto|D",
              help="Drop pool anchors whose reconstruction lies within D (L2, pixels in [0, 1]) of a training image "
                   "of --data; 'auto' = the 1st percentile of the source's real test-to-train distances, the "
                   "evaluate report's near-duplicate rule.")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def stats(model, data, out, seed, pool_per_class, near_dup_threshold, beam_args):
    """Encode labeled data with Beam and write per-class latent statistics."""
    from pipeline.generate.class_stats import write_stats_file

    s = write_stats_file(model, data, out, seed, pool_per_class, near_dup_threshold, list(beam_args))
    if s["anchors"] is not None:
        click.echo(f"near-duplicate anchors (reconstruction within {s['threshold']:.3f} of a training image) dropped: "
                   + ", ".join(f"{c}: {v['dropped']}/{v['kept'] + v['dropped']}" for c, v in s["anchors"].items()))
    click.echo(f"statistics of {s['labeled_images']:,} labeled images in {s['classes']} classes written to {out} "
               f"(posterior pool: {s['pool']:,} encodings)")


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
@click.option("--min-confidence", type=float, default=DEFAULT_PSEUDO_LABEL_CONFIDENCE, show_default=True,
              help="Averaged probability a row needs to get a pseudo-label; the rest stay unlabeled.")
@click.option("--labeler", "labelers", multiple=True, type=click.Choice(LABELERS), default=("neighbours",),
              show_default=True,
              help="How rows get their class: 'classifier' alone, averaged over latent 'neighbours', or 'spread' "
                   "(that average and label spreading over the neighbour graph). Repeat it with --validation to "
                   "use the one most accurate there.")
@click.option("--validation", default=None,
              help="Source of labeled images (e.g. held-out labeled rows) that choose among several --labeler; "
                   "they join the graph unlabeled, so their labels never spread.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the source's options "
                                                                      "(e.g. which rows labeled_per_class keeps).")
def pseudo_label_cmd(data, classifier_dir, model, out, neighbours, min_confidence, labelers, validation, seed):
    """Label the unlabeled rows of a source with a classifier, smoothed over the VAE's latent neighbours; write a
    new source for `stats`, `generate --labeled-data` and `train-classifier`."""
    from vae_model.pseudo_label import make_pseudo_labeled_source

    labelers = tuple(dict.fromkeys(labelers))
    if len(labelers) > 1 and validation is None:
        from vae_model.errors import UsageError

        raise UsageError(f"--labeler given {len(labelers)} times: choosing among labelers needs --validation SOURCE; "
                         "pass one --labeler or add --validation")
    m = make_pseudo_labeled_source(data, classifier_dir, out, model, neighbours, min_confidence, seed,
                                   labelers=labelers, validation=validation)
    chosen = "" if not m["labeler_validation"] else " (validation " + ", ".join(
        f"{n} {a['accuracy']:.1%}, log loss {a['log_loss']:.3f}" for n, a in m["labeler_validation"].items()) + ")"
    click.echo(f"{m['pseudo_labels']:,} of {m['pseudo_labels'] + m['left_unlabeled']:,} unlabeled rows pseudo-labeled "
               f"by {m['labeler']}{chosen} (averaged confidence >= {min_confidence}), {m['real_labels']:,} real labels "
               f"kept; written to {out} in {m['seconds']} s")
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
@click.option("--z", "points", multiple=True, required=True, metavar="Z1,Z2,...",
              help="A latent point, its coordinates comma-separated (e.g. --z 0,2.5). Repeatable.")
@click.option("--label", "labels", type=int, multiple=True,
              help="Class for a conditional model: one for every point, or one per --z.")
@click.option("--png", default=None, help="PNG to write: the decoded images in a row, in --z order.")
@click.option("--npy", default=None, help=".npy to write: uint8 (n, H, W).")
@click.option("--scale", type=int, default=1, show_default=True,
              help="Enlarge the PNG by whole-pixel replication (pixel values unchanged).")
@click.option("--model", default=None, help="Model directory (local, gs:// or 'bundled'); default: bundled.")
def decode(points, labels, png, npy, scale, model):
    """Decode latent points to images with the model's decoder (the same pixels generate makes for them)."""
    from pipeline.decode import run_decode

    images = run_decode(points, labels, png, npy, model, scale)
    click.echo(f"decoded {len(images)} point(s) to " + " and ".join(p for p in (png, npy) if p))


@cli.command()
@click.argument("out_dir")
@click.option("--checksums-only", is_flag=True,
              help="Check shard sizes and crc32c only, not records (on gs:// from object metadata: no download).")
def verify(out_dir, checksums_only):
    """Check shards against the manifest and every record; exit 1 listing each problem."""
    from pipeline.dataset.layout import read_manifest
    from pipeline.dataset.verify import verify_output

    try:
        tfrecords = not checksums_only and "tfrecord" in read_manifest(out_dir)["formats"]
    except UserError:
        tfrecords = False  # verify_output reports it
    if tfrecords:  # records in generate's layout parse with numpy; others import TensorFlow, muted (example.py)
        quiet_libraries(click.get_current_context().find_root().params.get("verbose", False), tensorflow=False)
    problems = verify_output(out_dir, records=not checksums_only)
    if problems:
        for p in problems:
            click.echo(f"FAIL {p}", err=True)
        click.echo(f"{out_dir}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    if checksums_only:
        click.echo(f"{out_dir}: OK (every shard matches the manifest's size and checksums; records not read)")
    else:
        click.echo(f"{out_dir}: OK (every shard matches the manifest, records valid, digest matches)")


@cli.command("train-classifier")
@click.option("--data", required=True, help="Labeled real data source, e.g. mnist, csv:train.csv, idx:DIR; only "
                                            "labeled rows train it, the source's test split scores it.")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Classifier directory to write (classifier.keras + classifier.json): new, empty or an earlier "
                   "classifier directory (replaced atomically).")
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
    from pipeline.dataset.readers import synthetic_training_stream
    from vae_model.classifier import check_real_share, load_classifier_config, train_classifier
    from vae_model.errors import UsageError

    if real_share is not None and synthetic_dir is None:
        raise UsageError("--real-share mixes real and synthetic images; pass --synthetic OUT_DIR with it")
    cfg = load_classifier_config(config_path, overrides)
    extra = {}
    if synthetic_dir is not None:
        real_share = 0.5 if real_share is None else real_share
        check_real_share(real_share)
        stream, info = synthetic_training_stream(synthetic_dir, cfg.model.num_classes)
        extra = {"synthetic": stream, "synthetic_info": info}
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
@click.option("--report", "report_dir", required=True, type=click.Path(),
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
    from pipeline.evaluation.evaluate import EvaluateOptions, evaluate

    options = EvaluateOptions(max_images=max_images, novelty_images=novelty_images, baseline_images=baseline_images,
                              diversity_per_class=diversity_per_class, near_dup_threshold=near_dup_threshold,
                              cas_epochs=cas_epochs, cas_max_steps=cas_max_steps, seed=seed)
    r = evaluate(out_dir, real_source, classifier_dir, report_dir, options,
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


@cli.command("augment")
@click.option("--data", "source", required=True,
              help="Source with some labeled and many unlabeled training rows, e.g. 'mnist?labeled_per_class=100', "
                   "a CSV with empty label cells, an npz with y_train = -1 rows.")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Output directory: new, empty or an earlier augment output (resumed: finished steps are skipped).")
@click.option("--vae", default=None, help="Trained VAE directory to reuse, or 'bundled-unlabeled' (conv VAE trained "
                                          "without labels on the 60,000 MNIST training images); default: train one.")
@click.option("--per-class", type=click.IntRange(min=1), default=None, help="Synthetic records per class [3000].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of everything, including which rows the source's options label.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML of augment settings (see pipeline/augment/config.py); default: the built-in ones.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set max_rounds=1 --set vae_epochs=5. Repeatable.")
def augment_cmd(source, out_dir, vae, per_class, seed, config_path, overrides):
    """Few labels in; a bigger labeled dataset (data/), a better classifier and the report that proves it out:
    VAE, classifier A, pseudo-labels, class statistics, generate, classifier B, evaluate, as one resumable job."""
    from pipeline.augment.config import load_augment_config
    from pipeline.augment.run import run_augment

    aug = load_augment_config(config_path, overrides, per_class)
    r = run_augment(source, out_dir, aug, vae, seed, log=click.echo)
    t = r["test"]
    if t.get("has_test"):
        click.echo(f"A {t['A_test']:.2%} -> B {t['B_test']:.2%} ({t['lift_points']:+.2f} points) on "
                   f"{t['test_images']:,} test images")
    click.echo(f"report: {out_dir}/report.html")


def _yaml_str(s: str) -> str:
    import json
    return json.dumps(s)  # JSON strings are YAML strings; keeps ':' and '?' in sources intact


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="vae-augment")
    except SystemExit as e:  # click's standalone mode always ends here
        exit_now(e.code)


if __name__ == "__main__":
    main()
