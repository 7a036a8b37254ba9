"""Scoring a generated dataset against real data: distances, metrics, CAS, the report and the preview grid.

Entry points: evaluate.evaluate (with evaluate.EvaluateOptions) and preview.write_preview."""
