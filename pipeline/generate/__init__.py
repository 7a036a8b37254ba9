"""The generation job (Beam).

job        GenerateJob and its defaults, its record fingerprint, and validate(): every check, on the driver
options    the `generate` flags (click), shared by the CLI and graph.run
planning   counts -> work units -> shard tasks
samplers   latent samplers; SamplerSpec builds one on the workers from in-job statistics
class_stats  ComputeClassStats (a stage of the job with --labeled-data) and write_stats_file (`stats`)
anchor_novelty  pruning pool anchors that decode onto a training image (`stats --near-dup-threshold`)
filter     the classifier filter
transforms sample + decode (+ filter) per shard task, and the job summary
sinks      Parquet/TFRecord shard writers that hash as they write
runners    which Beam runner runs a job
faults     test-only fault injection
graph      build(): the graph; run_job(): validate, run, publish the manifest; run(argv): from CLI arguments
api        GenerateRecords | WriteShards: the public transforms for Beam users' own pipelines (build() is them)
job_metrics  the job's Beam metrics as the lines `generate` prints at its end
"""
