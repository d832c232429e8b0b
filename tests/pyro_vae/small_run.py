"""The small digits run the run-folder tests train: 200 training examples in minibatches of 50 (every step a full
minibatch, so step and evaluation counts are exact), a 3-d latent and 16 hidden units, on the CPU."""

from pyro_vae.config import RunConfig, apply_overrides

SMALL = {
    "data.num_train": 200,
    "data.num_val": 50,
    "data.num_test": 40,
    "model.latent_dim": 3,
    "model.encoder.options.hidden_sizes": [16],
    "model.decoder.options.hidden_sizes": [16],
    "train.batch_size": 50,
    "device": "cpu",
}


def small_config(**overrides) -> RunConfig:
    """The small run with ``overrides`` (``{path: value}``) applied."""
    return apply_overrides(RunConfig(), list({**SMALL, **overrides}.items()))
