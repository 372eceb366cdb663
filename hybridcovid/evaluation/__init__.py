"""Evaluation: metrics by group and their intervals, calibration, the shortcut probe, Grad-CAM,
feature distance, one pass over a split; `hybridcovid/evaluate.py` puts them together."""
