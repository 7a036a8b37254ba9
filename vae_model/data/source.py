"""SOURCE strings: parsing (`KIND:PATH?OPTION=VALUE&...` or a bare path whose kind is inferred), the registry of
kinds, and `load_source`.

A kind is a module with `KIND`, `claims(path) -> bool` (does a bare path look like this kind?) and
`read(path, unlabeled_value, as_test=False) -> (train, test or None)`, and optionally `origin(path) -> dict`
(recorded as data.origin). The built-in kinds are the modules beside this one; other packages add kinds through
the entry-point group `vae_augment.sources` (name = KIND, value = module), so vae_model never imports them.
"""
from __future__ import annotations

import importlib.metadata
import os
import re

import numpy as np

from vae_model.data import csv, idx, mnist, npz
from vae_model.data.dataset import (Dataset, DataSplits, carve_validation, keep_labels_per_class, shape_text,
                                    unlabel)
from vae_model.data.files import one_line
from vae_model.errors import DataError, UsageError

PLUGIN_GROUP = "vae_augment.sources"
BUILTIN = {m.KIND: m for m in (mnist, csv, idx, npz)}
_INFERRED = (csv, npz, idx)  # the built-in kinds a bare path can have, asked before any plugin
_BUILTIN_FORMS = "mnist, csv:PATH or *.csv[.gz], idx:DIR or idx:IMAGES[,LABELS], npz:PATH or *.npz"
_TEST_OPTION_KINDS = ("csv", "npz")
OPTIONS = ("limit", "unlabeled_value", "unlabeled", "labeled_per_class", "test", "with_test")
_KIND_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_]+):(?!//)(.*)$", re.DOTALL)  # `gs://...` is a path, not a kind


# ---------------------------------------------------------------------------------------------- registry

def _entry_points() -> dict:
    """Plugin kinds by name; their modules are imported only when used."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def _load_plugin(ep):
    try:
        module = ep.load()
    except Exception as e:  # noqa: BLE001 - any import failure means the plugin is unusable
        raise UsageError(f"data source kind {ep.name!r} comes from {ep.value}, which cannot be imported "
                         f"({type(e).__name__}: {one_line(e)}); reinstall the package that provides it") from None
    if getattr(module, "KIND", None) != ep.name or not all(
            callable(getattr(module, f, None)) for f in ("claims", "read")):
        raise UsageError(f"{ep.value}, registered for data source kind {ep.name!r}, is not a source module "
                         f"(needs KIND = {ep.name!r}, claims() and read()); reinstall the package that provides it")
    return module


def source_kind(kind: str):
    """The module reading sources of `kind` (built-in or plugin)."""
    if kind in BUILTIN:
        return BUILTIN[kind]
    return _load_plugin(_entry_points()[kind])


def accepted_forms() -> str:
    plugins = [f"{k}:PATH" for k in sorted(set(_entry_points()) - set(BUILTIN))]
    return ", ".join([_BUILTIN_FORMS, *plugins])


# ---------------------------------------------------------------------------------------------- parsing

def parse_source(source: str) -> tuple[str, str, dict]:
    """Split a source string into (kind, path, options); raises UsageError for malformed strings."""
    if not isinstance(source, str) or not source.strip():
        raise UsageError(f"empty data source; accepted forms: {accepted_forms()}")
    body, has_query, query = source.strip().partition("?")
    options = _parse_options(query, source) if has_query else {}
    prefix = _KIND_PREFIX.match(body)
    if body == "mnist":
        kind, path = "mnist", ""
    elif prefix and not os.path.exists(body):
        kind, path = prefix.group(1).lower(), os.path.expanduser(prefix.group(2))
        if kind == "mnist" or (kind not in BUILTIN and kind not in _entry_points()):
            raise UsageError(f"data source {source!r}: unknown kind {prefix.group(1)!r}; "
                             f"accepted forms: {accepted_forms()}")
        if not path:
            raise UsageError(f"data source {source!r}: missing path after '{kind}:'")
    else:
        path = os.path.expanduser(body)
        kind = _infer_kind(path, source)
    if "test" in options and kind not in _TEST_OPTION_KINDS:
        raise UsageError(f"data source {source!r}: option 'test' only works for csv and npz sources")
    return kind, path, options


def _infer_kind(path: str, source: str) -> str:
    for module in _INFERRED:
        if module.claims(path):
            return module.KIND
    plugins = {name: ep for name, ep in _entry_points().items() if name not in BUILTIN}
    for name, ep in sorted(plugins.items()):
        if _load_plugin(ep).claims(path):
            return name
    if os.path.isdir(path):
        what = f"neither IDX files nor a {' or '.join(sorted(plugins))} source" if plugins else "no IDX files"
        raise DataError(f"{path}: directory holds {what}; accepted forms: {accepted_forms()}")
    raise UsageError(f"data source {source!r} not recognized; accepted forms: {accepted_forms()}")


def _parse_options(query: str, source: str) -> dict:
    options: dict = {}
    for item in filter(None, query.split("&")):
        name, has_value, value = item.partition("=")
        if name not in OPTIONS:
            raise UsageError(f"data source {source!r}: unknown option {name!r}; valid options: {', '.join(OPTIONS)}")
        if not has_value or not value:
            raise UsageError(f"data source {source!r}: option {name!r} needs a value ({name}=...)")
        if name in options:
            raise UsageError(f"data source {source!r}: option {name!r} given twice")
        options[name] = _option_value(name, value, source)
    if options.get("unlabeled") and "labeled_per_class" in options:
        raise UsageError(f"data source {source!r}: 'unlabeled' and 'labeled_per_class' contradict; use one")
    return options


def _option_value(name: str, value: str, source: str):
    if name == "test":
        return os.path.expanduser(value)
    if name in ("unlabeled", "with_test"):
        flags = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if value.lower() not in flags:
            raise UsageError(f"data source {source!r}: {name}={value!r} must be 1 or 0")
        return flags[value.lower()]
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"data source {source!r}: {name}={value!r} must be an integer") from None
    minimum = {"limit": 1, "labeled_per_class": 0}.get(name)
    if minimum is not None and number < minimum:
        raise UsageError(f"data source {source!r}: {name}={number} must be >= {minimum}")
    return number


# ---------------------------------------------------------------------------------------------- loading

def load_source(source: str, *, validation_split: float = 0.0, seed: int = 0) -> DataSplits:
    """Load a data source (see vae_model.data) into train / test / val splits."""
    if not isinstance(validation_split, (int, float)) or not 0.0 <= validation_split < 1.0:
        raise UsageError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    kind, path, options = parse_source(source)
    reader = source_kind(kind)
    unlabeled_value = options.get("unlabeled_value")
    train, test = reader.read(path, unlabeled_value)
    if "test" in options:
        test = reader.read(options["test"], unlabeled_value, as_test=True)[0]
    if test is not None and test.image_shape != train.image_shape:
        raise DataError(f"{options.get('test', path)}: test images are {shape_text(test)} but train images are "
                        f"{shape_text(train)}; use test data of the same size")

    if "limit" in options:
        train = train.take(slice(options["limit"]))
        test = test.take(slice(options["limit"])) if test is not None else None
    if options.get("unlabeled"):
        train = unlabel(train)
        test = unlabel(test) if test is not None else None
    if options.get("with_test"):
        if test is None:
            raise UsageError(f"data source {source!r}: with_test=1 needs a source with a test split")
        # test images join training unlabeled (transductive, as in seed 004); the test split stays for scoring
        train = Dataset(np.concatenate([train.images, test.images]),
                        np.concatenate([train.labels, np.full(len(test), -1, np.int64)]))
    val = None
    if validation_split > 0:
        train, val = carve_validation(train, validation_split, seed, source)
    if "labeled_per_class" in options:
        train = keep_labels_per_class(train, options["labeled_per_class"], seed)
    origin = getattr(reader, "origin", None)
    return DataSplits(source=source, train=train, test=test, val=val, origin=origin(path) if origin else None)
