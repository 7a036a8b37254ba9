"""Public readers of a `vae-augment generate` output (local or gs://); the code lives in pipeline.dataset."""
from pipeline.dataset.layout import read_manifest
from pipeline.dataset.readers import load_dataframe, load_parquet, load_table, tfrecord_dataset

__all__ = ["load_dataframe", "load_parquet", "load_table", "read_manifest", "tfrecord_dataset"]
