"""`vae-augment augment`: few labels plus many unlabeled images in, a bigger labeled dataset, a better classifier
and the report that proves it out, as one resumable job.

Modules: config (the knobs, one YAML + --set), state (per-step fingerprints, output digests, resume),
data (the source read once, split into train-only working files; the test split read only for scoring),
decide (the validation-only rules), steps (each step: one library call the single commands make),
report (report.json + report.html), run (the step sequence and its progress lines).
Importing this package imports neither TensorFlow nor Beam.
"""
