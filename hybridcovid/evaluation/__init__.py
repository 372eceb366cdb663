"""Evaluation: metrics and their intervals, calibration, the shortcut probe, Grad-CAM,
feature distance, and evaluating a selected checkpoint."""
