"""Training: the train step and its state, optimizers, checkpoints, data parallelism and
TensorBoard summaries; the training loop that uses them is `hybridcovid/experiment.py`."""
