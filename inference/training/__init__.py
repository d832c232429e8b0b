"""Training any Pyro model/guide pair with a gradient estimator: the trainer, its callbacks and checkpoints."""
