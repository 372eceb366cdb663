"""Speed measurements: the train step and inference, the input pipeline, data preparation."""
