"""The `vae-augment generate` flags, declared once: the CLI's `generate` command is made of them, and
`graph.run(argv)` parses its argv with the same command. Only parse errors are raised here (not an integer,
not a comma-separated list, a Beam option no Beam options class parses, Dataflow options Dataflow would refuse);
every other check is `job.validate`'s.

Light at import (click, numpy, no Beam or TensorFlow): the CLI imports it for its decorators."""
from __future__ import annotations

import click

from pipeline.generate.job import (CHECKSUMS, DEFAULT_CHECKSUMS, DEFAULT_SAMPLER, FORMATS, MAX_FILTER_ROUNDS, RUNNERS,
                                  GenerateJob)
from pipeline.generate.samplers import SAMPLERS
from vae_model.errors import UsageError

CONTEXT_SETTINGS = {"ignore_unknown_options": True, "allow_extra_args": True}


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


def _names(ctx, param, value):
    return [v.strip() for v in value.split(",") if v.strip()]


def _checksum_names(ctx, param, value):
    return tuple(_names(ctx, param, value))


_OPTIONS = [
    click.option("--model", default=None,
                 help="Model directory (local or gs://), or 'bundled' (the default): the bundled MNIST model."),
    click.option("--out", required=True, help="Output directory (local or gs://) for shards and manifest.json."),
    click.option("--num", type=int, default=None,
                 help="Total records, split over the classes as evenly as possible."),
    click.option("--per-class", type=int, default=None, help="Exactly this many records for each class in --classes."),
    click.option("--sampler", default=None, metavar="[" + "|".join(SAMPLERS) + "]",
                 help="How latent codes are drawn (see the README's sampler comparison)  "
                      f"[default: {DEFAULT_SAMPLER}]"),
    click.option("--latents", default=None, metavar="FILE",
                 help="Decode these latent codes instead of sampling: .npy (float (n, d)), .npz (`z`, optional "
                      "`labels`) or Parquet (`latent` list<float>, optional `label`), local or gs://; one record "
                      "per row, in file order. Replaces the sampling options (--num, --per-class, --classes, "
                      "--sampler, --spread, --stats, --labeled-data, --filter-classifier)."),
    click.option("--classes", callback=_int_list, default=None, help="Comma-separated classes (default: all)."),
    click.option("--spread", type=float, default=None,
                 help="Scale of the noise around the class centre / example / prior; default 1.25 for posterior, "
                      "1.0 for the others."),
    click.option("--labeled-data", default=None,
                 help="Compute class statistics from this source inside the job (e.g. mnist, csv:FILE) instead of "
                      "the model directory's."),
    click.option("--stats", "stats_path", default=None, help="Class statistics file from `vae-augment stats`."),
    click.option("--gmm-components", type=int, default=GenerateJob.gmm_components, show_default=True,
                 help="Mixture size for --sampler gmm."),
    click.option("--seed", type=int, default=0, show_default=True, help="Job seed; same seed, same records."),
    click.option("--formats", default=",".join(FORMATS), show_default=True, callback=_names,
                 help="Comma-separated output formats."),
    click.option("--checksums", default=",".join(DEFAULT_CHECKSUMS), show_default=True, callback=_checksum_names,
                 metavar="[" + "|".join(CHECKSUMS) + "]",
                 help="Shard checksums the manifest records and `verify` checks, comma-separated: crc32c (always; "
                      "what GCS stores per object, so gs:// shards verify without a download) and optionally sha256 "
                      "(costs ~2.7 s per GB written on one core)."),
    click.option("--shards", type=int, default=None, help="Shards per format (default: one per 50,000 records)."),
    click.option("--batch-size", type=int, default=GenerateJob.batch_size, show_default=True,
                 help="Records per work unit and decoder batch."),
    click.option("--runner", default=RUNNERS[0], show_default=True, metavar="[" + "|".join(RUNNERS) + "]",
                 help="Beam runner. BundleBasedDirectRunner is local and retries failed bundles like Dataflow."),
    click.option("--workers", type=int, default=None, help="Local worker processes, or Dataflow workers."),
    click.option("--gpu", default=None,
                 help="Dataflow GPU type, e.g. nvidia-l4: adds the accelerator service option, a resource hint on "
                      "the decode step and, unless --machine_type is given, the smallest machine type for it "
                      "(g2-standard-4 for nvidia-l4)."),
    click.option("--filter-classifier", default=None, metavar="CLF_DIR",
                 help="Keep only records this classifier (a `train-classifier` directory, or 'bundled') assigns to "
                      "their label with probability >= --min-confidence; each class is topped back up to its "
                      "count."),
    click.option("--min-confidence", type=float, default=None,
                 help="Threshold for --filter-classifier, in (0, 1]; default 0.9."),
    click.option("--max-filter-rounds", type=int, default=MAX_FILTER_ROUNDS, show_default=True,
                 help="With --filter-classifier: rounds of candidates a work unit may decode before the job fails "
                      "(raise it for --sampler prior, where each class is a small share of the samples)."),
    click.option("--overwrite", is_flag=True, help="Replace another job's output in --out."),
    click.argument("beam_args", nargs=-1, type=click.UNPROCESSED),
]


def generate_options(f):
    """Decorator: every `generate` flag, plus BEAM_ARGS (the options Beam's PipelineOptions takes)."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def job_from_options(beam_args, stats_path=None, **kw) -> tuple[GenerateJob, list[str]]:
    """The parsed flags as (GenerateJob, Beam arguments, each one `--name=value` token or a bare flag)."""
    if kw.get("sampler") is None:
        kw["sampler"] = DEFAULT_SAMPLER
    elif kw.get("latents") is not None:  # given explicitly, even as the default: validate cannot tell
        raise UsageError(f"Expected no --sampler with --latents (the file's rows are the records), Received: "
                         f"sampler={kw['sampler']}")
    job = GenerateJob(stats=stats_path, **kw)
    args = beam_arguments(beam_args)
    if job.runner == "DataflowRunner":
        from pipeline.generate.runners import check_dataflow_args

        check_dataflow_args(job.gpu, args)
    return job, args


def beam_arguments(args) -> list[str]:
    """`args` as Beam's own argparse reads them (`--name value` and `--name=value` alike), each option returned as
    one `--name=value` token so the job and its manifest see one spelling. UsageError (one line) for what no Beam
    options class parses: Beam would only warn and drop it."""
    import difflib

    parser = _beam_parser()
    _, unknown = parser.parse_known_args(list(args))
    if unknown:
        name = unknown[0].split("=", 1)[0]
        close = difflib.get_close_matches(name, parser._option_string_actions) if name.startswith("--") else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"Expected Beam pipeline options such as --region us-central1 or --region=us-central1; "
                         f"Received: {unknown[0]!r}{hint}")
    out, rest = [], list(args)
    while rest:
        arg = rest.pop(0)
        action = parser._option_string_actions.get(arg)
        if action is not None and action.nargs is None and rest:  # an option that takes one value
            arg = f"{arg}={rest.pop(0)}"
        out.append(arg)
    return out


def _beam_parser():
    """Every option of every PipelineOptions class, as PipelineOptions.get_all_options builds its parser; parse
    errors raise UsageError instead of printing argparse's usage and exiting."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class Parser(_BeamArgumentParser):
        def error(self, message):
            raise UsageError(f"Beam options: {message}")

    parser = Parser(allow_abbrev=False, add_help=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return parser


def parse_generate_args(argv: list[str]) -> tuple[GenerateJob, list[str]]:
    """`vae-augment generate` arguments (without the command name) as (GenerateJob, Beam arguments); click
    exceptions for parse errors."""
    @click.command("generate", context_settings=CONTEXT_SETTINGS)
    @generate_options
    def parse(**kw):
        return job_from_options(**kw)

    return parse.main(list(argv), prog_name="vae-augment generate", standalone_mode=False)
