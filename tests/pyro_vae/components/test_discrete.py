import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.components.discrete import (
    BernoulliGuide,
    BernoulliPrior,
    ConcreteGuide,
    ConcretePrior,
    EnumerableBinaryModel,
)
from pyro_vae.components.guides import GUIDES
from pyro_vae.components.priors import PRIORS


def test_components_are_registered():
    assert isinstance(PRIORS.build("bernoulli", latent_dim=3), BernoulliPrior)
    assert isinstance(PRIORS.build("concrete", latent_dim=3), ConcretePrior)
    assert isinstance(GUIDES.build("bernoulli", latent_dim=3), BernoulliGuide)
    assert isinstance(GUIDES.build("concrete", latent_dim=3), ConcreteGuide)


def test_bernoulli_prior_shapes_and_log_prob():
    prior = BernoulliPrior(latent_dim=5, probs=0.2)()
    assert (prior.batch_shape, prior.event_shape) == (torch.Size(), torch.Size([5]))
    z = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    assert prior.log_prob(z).item() == pytest.approx(3 * math.log(0.2) + 2 * math.log(0.8), rel=1e-6)


def test_learned_prior_has_parameters_and_fixed_one_has_none():
    assert [name for name, _ in BernoulliPrior(4, learned=True).named_parameters()] == ["logits"]
    assert list(BernoulliPrior(4).parameters()) == []


def test_bernoulli_guide_log_prob_is_the_product_of_bernoullis():
    guide = BernoulliGuide(latent_dim=3)
    assert guide.num_params(3) == 3
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    q = guide(logits)
    z = torch.tensor([[1.0, 0.0, 1.0]])
    p = torch.sigmoid(logits)
    expected = (z * p.log() + (1 - z) * (1 - p).log()).sum(-1)
    assert torch.allclose(q.log_prob(z), expected)
    assert q.event_shape == (3,)


def test_straight_through_concrete_samples_are_binary_scored_by_the_pmf_and_differentiable():
    torch.manual_seed(0)
    logits = torch.randn(1000, 4, requires_grad=True)
    q = ConcreteGuide(latent_dim=4, temperature=0.5)(logits)
    z = q.rsample()
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(q.log_prob(z), dist.Bernoulli(logits=logits).to_event(1).log_prob(z))
    z.sum().backward()
    # the relaxed sample increases with its logit (clamped samples can give exactly zero)
    assert (logits.grad >= 0).all() and (logits.grad > 0).double().mean() > 0.95
    # hard samples are Bernoulli(sigmoid(logits)) draws: frequency within 5 standard errors
    p = torch.sigmoid(logits.detach())
    assert (z.detach() - p).sum().abs() < 5 * (p * (1 - p)).sum().sqrt()


def test_relaxed_concrete_pairs_with_the_concrete_prior(float64):
    q = ConcreteGuide(latent_dim=2, temperature=0.7, straight_through=False)(torch.zeros(2))
    prior = ConcretePrior(latent_dim=2, temperature=0.7)()
    z = q.rsample()
    assert ((z > 0) & (z < 1)).all()
    expected = torch.distributions.RelaxedBernoulli(torch.tensor(0.7), logits=torch.zeros(2)).log_prob(z).sum()
    assert prior.log_prob(z).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("options", [{"probs": 1.0}, {"probs": 0.0}])
def test_bad_prior_probability_raises(options):
    with pytest.raises(ValueError, match="probs"):
        BernoulliPrior(3, **options)


def test_bad_temperature_raises():
    with pytest.raises(ValueError, match="temperature"):
        ConcreteGuide(3, temperature=0.0)


def test_enumerable_model_exact_quantities_are_consistent(float64):
    toy = EnumerableBinaryModel(latent_dim=3, data_dim=4)
    x = toy.sample(5, seed=0)
    log_px = toy.exact_log_marginal(x)
    # p(x) sums to one over all 2^4 observations
    assert toy.exact_log_marginal(toy.all_x).exp().sum().item() == pytest.approx(1.0, rel=1e-12)
    # IWAE-1 is the ELBO, and ELBO < IWAE-2 < IWAE-3 < log p(x) (Burda et al. 2016, theorem 1)
    elbo, iwae2, iwae3 = toy.exact_elbo(x), toy.exact_iwae(x, 2), toy.exact_iwae(x, 3)
    assert torch.allclose(toy.exact_iwae(x, 1), elbo)
    assert ((elbo < iwae2) & (iwae2 < iwae3) & (iwae3 < log_px)).all()


def test_enumerable_model_log_joint_matches_pyro_trace(float64):
    toy = EnumerableBinaryModel()
    x = toy.sample(2, seed=0)
    z = toy.all_z[[3, 6]]
    trace = pyro.poutine.trace(pyro.poutine.condition(toy.model, data={"z": z})).get_trace(x)
    log_joint = sum(
        site["fn"].log_prob(site["value"])
        for site in trace.nodes.values()
        if site["type"] == "sample" and site["name"] != "data"
    )
    assert torch.allclose(log_joint, toy.log_joint(x)[[3, 6], [0, 1]])
