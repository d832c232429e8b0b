"""VAEs regularized by MMD or Jensen-Shannon in place of the KL train without NaN and pull codes to the prior."""

import pyro
import pytest
import torch

from inference import Trainer, estimator
from pyro_vae import build_vae
from pyro_vae.data import load_dataset


@pytest.mark.parametrize("name", ["mmd", "js"])
def test_divergence_regularized_vaes_train_without_nan_and_pull_codes_to_the_prior(name):
    pyro.set_rng_seed(0)
    x = load_dataset("digits", seed=0).train[:400].bernoulli(generator=torch.Generator().manual_seed(0))
    vae = build_vae(64, latent_dim=2, hidden_sizes=(32,), num_data=len(x))
    trainer = Trainer(vae.model, vae.guide, estimator(name, max_plate_nesting=1, weight=100.0), module=vae)
    for _ in range(5):
        trainer.train_epoch([(batch,) for batch in x.split(100)], num_data=len(x))
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    with torch.no_grad():
        codes = vae.posterior(x).sample()  # draws of the aggregate posterior
    # it is pulled towards the prior N(0, I): mean near 0, standard deviation near 1 in each dimension
    assert codes.mean(0).abs().max() < 0.3 and ((codes.std(0) - 1).abs() < 0.3).all(), codes.std(0)
