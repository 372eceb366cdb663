"""Training: the train step and its state, optimizers, checkpoints, data parallelism and
the training loop."""
