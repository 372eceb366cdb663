"""The report: report.md, metrics.json, predictions.csv and figures; the paper's table."""
