"""OUT_DIR/README.md: a Hugging Face dataset card (YAML front matter: features, splits, sizes, data files), then how
the records were made, per-class counts, the quality figures of `evaluate` when it has run, and how to load them
with each reader. Written by publish.finalize with the TFDS metadata, before the manifest; refreshed by
`evaluate` with its verdict.

Which downstream files are ours (for --overwrite): `is_ours(name, text)`; each carries a marker line.
"""
from __future__ import annotations

import json

from pipeline.dataset import layout, tfds
from pipeline.dataset.arrow import class_names

CARD_FILE = "README.md"
MARKER = "<!-- Written by vae-augment: the dataset card of this output. -->"
FILES = (CARD_FILE, tfds.INFO_FILE, tfds.FEATURES_FILE)  # every downstream file publish writes into OUT_DIR


def _q(s) -> str:
    return json.dumps(str(s))  # a JSON string is a YAML string


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < limit:
            return name
    return "n>1B" if n > 1_000_000_000 else "100M<n<1B"


def front_matter(manifest: dict) -> str:
    """The YAML block Hugging Face reads: features as `datasets` writes them, one `train` split of the Parquet
    shards, sizes from the manifest."""
    parquet = [s for s in manifest["shards"] if s["format"] == "parquet"]
    num_bytes = sum(int(s["bytes"]) for s in parquet) or sum(int(s["bytes"]) for s in manifest["shards"])
    names = class_names(tfds.num_classes_of(manifest))
    lines = ["---", "pretty_name: " + _q(f"vae-augment synthetic digits ({manifest.get('sampler', '?')}, "
                                          f"seed {manifest.get('seed', '?')})"),
             "task_categories:", "- image-classification", "tags:", "- synthetic", "- vae-augment",
             "size_categories:", "- " + _size_category(int(manifest["total"]))]
    if parquet:
        lines += ["configs:", "- config_name: default", "  data_files:", "  - split: train",
                  f"    path: {layout.SHARD_DIRS['parquet']}/*{layout.SUFFIX['parquet']}"]
    lines += ["dataset_info:", "  features:", "  - name: id", "    dtype: int64", "  - name: label", "    dtype:",
              "      class_label:", "        names:"]
    lines += [f"          {_q(i)}: {_q(n)}" for i, n in enumerate(names)]
    lines += ["  - name: image", "    dtype: binary", "  - name: latent", "    list: float32",
              "  - name: sampler", "    dtype: string", "  - name: model_id", "    dtype: string",
              "  - name: seed", "    dtype: int64",
              "  splits:", "  - name: train", f"    num_bytes: {num_bytes}", f"    num_examples: {manifest['total']}",
              f"  download_size: {num_bytes}", f"  dataset_size: {num_bytes}", "---"]
    return "\n".join(lines)


def _how_made(m: dict) -> list[str]:
    cfg = m.get("config") or {}
    rows = [("model id", f"`{m.get('model_id', '?')}` (first 16 hex of the decoder's sha256)"),
            ("sampler", f"`{m.get('sampler', '?')}`" + (f", spread {cfg['spread']}" if cfg.get("spread") is not None
                                                        else "")),
            ("seed", f"`{m.get('seed', '?')}`"),
            ("filter", _filter_text(m.get("filter"))),
            ("records", f"{int(m['total']):,} ({m['height']}x{m['width']} uint8, latent size {m.get('latent_dim', '?')})"),
            ("shards", f"{m.get('num_shards', '?')} per format: {', '.join(m['formats'])}"),
            ("dataset_digest", f"`{m.get('dataset_digest', '?')}`"),
            ("runner", _plain(m.get("runner", "?"))),
            ("versions", ", ".join(f"{k} {v}" for k, v in sorted((m.get("versions") or {}).items())) or "?")]
    out = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if m.get("command"):
        out += ["", "Command:", "", "```bash", str(m["command"]), "```"]
    return out


def _plain(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
    return str(value)


def _filter_text(f) -> str:
    if not f:
        return "none"
    acc = f.get("acceptance")
    return (f"classifier `{f.get('classifier_id') or f.get('classifier_dir')}`, p(label) >= {f.get('min_confidence')}"
            + (f", acceptance {acc:.1%}" if isinstance(acc, (int, float)) else ""))


def _counts(m: dict) -> list[str]:
    per = sorted(((int(c), n) for c, n in m["per_class"].items()))
    return ["| class | records |", "|---|---|"] + [f"| {'unlabeled (-1)' if c < 0 else c} | {n:,} |" for c, n in per]


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "share":
        return f"{value:.2%}"
    return str(value)


def _quality(report: dict | None, report_ref: str | None) -> list[str]:
    if not report or "verdict" not in report:
        return ["Not evaluated yet: `vae-augment evaluate OUT_DIR --real mnist --report REPORT_DIR` scores the records "
                "(label fidelity, CAS, novelty, diversity) and refreshes this section."]
    v = report["verdict"]
    out = [f"**Verdict: {v['status'].upper()}** against the project's quality targets"
           + (f" (report: `{report_ref}`)" if report_ref else "") + ".", ""]
    if v.get("advice"):
        out += [v["advice"], ""]
    out += ["| target | value | threshold | status |", "|---|---|---|---|"]
    for t in v["targets"]:
        out.append(f"| {t['what']} | {_fmt(t['value'], t['unit'])} | {t['op']} {_fmt(t['threshold'], t['unit'])} | "
                   f"{t['status']}{' (' + t['reason'] + ')' if t.get('reason') else ''} |")
    if report.get("created"):
        out += ["", f"Evaluated {report['created']}."]
    return out


def loading_examples(h: int, w: int) -> str:
    """How to read the output with each reader; the same snippets a test runs."""
    return f"""Hugging Face `datasets` (the front matter above names the Parquet shards and the features):

```python
import numpy as np
from datasets import load_dataset
ds = load_dataset("parquet", data_dir="OUT_DIR/parquet", split="train")   # or load_dataset("OUT_DIR")
print(ds.features["label"].names)                                        # ClassLabel
batch = ds.with_format("numpy", columns=["image", "label"])[:]           # whole columns, no per-row Python
images = batch["image"].view(np.uint8).reshape(-1, {h}, {w})              # raw bytes -> uint8 (N, {h}, {w}), no copy
labels = batch["label"]
```

TensorFlow Datasets (dataset_info.json and features.json point at the TFRecord shards, split `train`):

```python
import tensorflow_datasets as tfds
builder = tfds.builder_from_directory("OUT_DIR")
ds = builder.as_dataset(split="train", shuffle_files=True)   # {{"image": uint8 ({h}, {w}), "label", "id", ...}}
```

pandas and pyarrow:

```python
import pandas as pd, pyarrow.parquet as pq
df = pd.read_parquet("OUT_DIR/parquet")          # image: {h * w} raw bytes per row
table = pq.read_table("OUT_DIR/parquet")
```

tf.data and numpy, with vae-augment installed (shard list from manifest.json, sizes checked):

```python
from pipeline.readers import load_parquet, tfrecord_dataset
images, labels = load_parquet("OUT_DIR")                  # uint8 (N, {h}, {w}), int64 (N,)
ds = tfrecord_dataset("OUT_DIR", batch_size=256)          # (uint8 [B, {h}, {w}, 1], int64 [B])
```"""


def render(manifest: dict, report: dict | None = None, report_ref: str | None = None) -> str:
    m = manifest
    parts = [front_matter(m), "", MARKER, "",
             f"# Synthetic digits from a VAE ({int(m['total']):,} records)", "",
             f"Images decoded by a Keras VAE in an Apache Beam job (`vae-augment generate`). Each record has an "
             f"`id`, a `label` (-1 = unlabeled), the {m['height']}x{m['width']} uint8 `image` (raw row-major bytes), "
             "the `latent` code it was decoded from, and `sampler`, `model_id`, `seed`. The same files are in "
             "Parquet (`parquet/`) and TFRecord `tf.train.Example` (`tfrecord/`) form; `manifest.json` lists every "
             "shard with its sha256, and `vae-augment verify OUT_DIR` checks them all.", "",
             "## How it was made", ""] + _how_made(m) + ["", "## Records per class", ""] + _counts(m) + \
            ["", "## Quality", ""] + _quality(report, report_ref) + \
            ["", "## Loading", "", "`OUT_DIR` is this folder.", "", loading_examples(m["height"], m["width"]), ""]
    return "\n".join(parts)


def downstream_files(manifest: dict, report: dict | None = None, report_ref: str | None = None) -> dict[str, str]:
    """{name in OUT_DIR: text}: the dataset card and the TFDS metadata of an output."""
    return {CARD_FILE: render(manifest, report, report_ref), **tfds.tfds_files(manifest)}


def write_downstream_files(out: str, manifest: dict) -> list[str]:
    """Write the card and TFDS metadata into `out` (local or gs://); the names written."""
    files = downstream_files(manifest)
    for name, text in files.items():
        layout._write_text(layout.join(out, name), text)
    return list(files)


def is_ours(name: str, text: str) -> bool:
    """Whether OUT/`name` with this content is a downstream file vae-augment wrote (never a user's own)."""
    if name == CARD_FILE:
        return MARKER in text.split("\n---\n", 1)[-1][:4096]
    return name in FILES and tfds.is_ours(name, text)


def refresh(out: str, manifest: dict, report: dict, report_ref: str | None = None) -> bool:
    """Rewrite OUT/README.md with `evaluate`'s verdict, only when the card there is ours (or absent); False when
    it is a user's file or OUT is not writable (the report stands on its own)."""
    from apache_beam.io.filesystems import FileSystems

    path = layout.join(out, CARD_FILE)
    try:
        if FileSystems.exists(path):
            with FileSystems.open(path) as f:
                if not is_ours(CARD_FILE, f.read(1 << 20).decode("utf-8", "replace")):
                    return False
        layout._write_text(path, render(manifest, report, report_ref))
    except OSError:
        return False
    return True
