"""THE on-disk format of a `vae-augment generate` output; imports nothing else from pipeline/.

layout     file and folder names, shard naming, shard stats files, the manifest reader and writer
batch      RecordBatch, the unit every codec encodes and decodes
arrow      the Arrow/Parquet schema, RecordBatch <-> Arrow table, the `image` column unpacked into uint8
example    tf.train.Example wire encoding (plain and TFRecord-framed in one pass) and parsing
tfrecord   crc32c, TFRecord framing, the one walk over a file's frames
digest     per-record sha256 and the order-independent dataset digest
readers    load_parquet / load_table / load_dataframe / tfrecord_dataset (public via pipeline.readers)
verify     every shard and record checked against the manifest
publish    the output directory's life cycle: prepare, abandon, finalize (writes the manifest last)
source     the `parquet:DIR` data source plugin of vae_model.data
"""
