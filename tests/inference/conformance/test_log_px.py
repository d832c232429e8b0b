"""Every log p(x) method on the catalogue's pairs whose exact log p(x) is known, their guides fitted by Pyro's
SVI: ``exact`` to 1e-6, ``is`` with K = 5000 within 0.02 nats and ``ais`` within 0.05 nats of it, in nats per
data point as reported (with ``data_plate=None``, the batch's joint estimate over its number of points), or a
one-sentence refusal naming what works."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from inference import UnreliableEstimateWarning, log_marginal_likelihood
from inference.data_rows import register_rows
from tests.inference.conformance.catalogue import CATALOGUE, build, fitted

EXACT = sorted(key for key in CATALOGUE if build(key).exact is not None)
AUTOGUIDES = {"AutoNormal", "AutoDiagonalNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal"}
AUTOGUIDES |= {"AutoIAFNormal", "EasyGuide"}
TOLERANCE = {"exact": 1e-6, "is": 0.02, "ais": 0.05}


def estimate(pair, method, **options):
    return log_marginal_likelihood(
        pair.model,
        pair.guide,
        *pair.args,
        method=method,
        data_plate=pair.data_plate,
        max_plate_nesting=pair.max_plate_nesting,
        seed=0,
        **options,
    )


@pytest.mark.parametrize("method", ["exact", "is", "ais"])
@pytest.mark.parametrize("key", EXACT)
def test_log_px_within_its_tolerance_of_the_exact_value(key, method, float64):
    pair = fitted(build(key))
    options = {"is": {"num_samples": 5000}, "ais": {"num_steps": 200, "num_chains": 32}}.get(method, {})
    if method == "ais" and pair.enumerated:
        with pytest.raises(ValueError, match="needs continuous latents, but latent site 'y' is discrete.*'is'"):
            estimate(pair, method, **options)
        return
    if method == "ais" and key in AUTOGUIDES:
        with pytest.raises(ValueError, match="auxiliary site.*proposal='prior'"):
            estimate(pair, method, **options)
        options["proposal"] = "prior"  # the refusal's advice, which must then work
    with _no_unreliable_warning():
        result = estimate(pair, method, **options)
    assert result.log_px.shape == pair.exact.shape
    num_points = len(pair.args[0])
    assert abs((result.log_px.sum() - pair.exact.sum()).item()) / num_points < TOLERANCE[method]


class _no_unreliable_warning:
    """The catalogue's guides are close enough to their posteriors that no estimate should be flagged."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.seen = self._catch.__enter__()
        warnings.simplefilter("always", UnreliableEstimateWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        flagged = [w for w in self.seen if issubclass(w.category, UnreliableEstimateWarning)]
        assert not flagged, [str(w.message) for w in flagged]


def test_a_guide_without_a_particle_dimension_is_estimated_one_particle_a_pass(float64):
    pair = build("guide without a particle dimension")
    with pytest.raises(RuntimeError):
        estimate(pair, "is", num_samples=20)
    one_pass = estimate(pair, "is", num_samples=20, vectorize_particles=False)
    assert torch.isfinite(one_pass.log_px).all() and one_pass.log_px.shape == (6,)


def test_heavy_tailed_weights_warn_and_say_the_mc_error_is_unreliable(float64):
    """With k-hat above 0.7 on most examples the delta-method s.e. cannot be trusted: the Python API warns with a
    named class, and the result says so."""
    pair = build("pyro.param guide")
    pair.guide(*pair.args)  # create its parameters
    pyro.get_param_store()["s"] = torch.tensor(0.05)  # far narrower than the posterior: heavy-tailed weights
    with pytest.warns(UnreliableEstimateWarning, match="k-hat above 0.7"):
        result = estimate(pair, "is", num_samples=200)
    assert result.mc_stderr_reliable is False and result.summary()["mc_stderr_reliable"] is False
    good = estimate(build("pyro.param guide"), "is", num_samples=200)
    assert good.mc_stderr_reliable is True


def observed_sequences(packed, tag=None):
    """A model of sequences given packed (as an RNN takes them), without latents: log p(x) is deterministic."""
    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    steps = torch.arange(padded.shape[1]) < lengths.unsqueeze(-1)
    with pyro.plate("data", len(lengths)):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand(padded.shape[1:]).mask(steps).to_event(1), obs=padded)


def no_guide(*args):
    pass


def test_chunks_split_packed_sequences_and_registered_types(float64):
    """Chunked evaluation splits every batched argument: a ``PackedSequence`` by its sequences, a registered type
    by its own rule; an unknown type is refused before anything runs, naming the argument."""
    padded = torch.randn(250, 3, generator=torch.Generator().manual_seed(0))
    lengths = torch.randint(1, 4, (250,), generator=torch.Generator().manual_seed(1))
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    whole = log_marginal_likelihood(observed_sequences, no_guide, packed, num_samples=2, data_batch_size=None)
    chunked = log_marginal_likelihood(observed_sequences, no_guide, packed, num_samples=2, data_batch_size=100)
    steps = torch.arange(3) < lengths.unsqueeze(-1)
    exact = (dist.Normal(0.0, 1.0).log_prob(padded) * steps).sum(-1)
    assert torch.allclose(chunked.log_px, exact) and torch.allclose(whole.log_px, exact)

    class Tag:
        def __init__(self, ids):
            self.ids = ids

    with pytest.raises(TypeError, match="argument 1 is a Tag.*register_rows"):
        log_marginal_likelihood(observed_sequences, no_guide, packed, Tag(list(range(250))), num_samples=2)
    register_rows(Tag, num_rows=lambda tag: len(tag.ids), rows=lambda tag, start, stop: Tag(tag.ids[start:stop]))
    tagged = log_marginal_likelihood(observed_sequences, no_guide, packed, Tag(list(range(250))), num_samples=2)
    assert torch.allclose(tagged.log_px, exact)


def test_a_guide_with_parameters_per_data_point_cannot_take_a_chunk_and_is_told_what_to_pass(float64):
    """AutoNormal keeps one location per data point of the set it was built on: a chunk of 4 of its 6 points fails
    in Pyro's shape check, with a note naming the fix, which then works."""
    pair = build("AutoNormal")
    with pytest.raises(ValueError) as refused:
        estimate(pair, "is", num_samples=10, data_batch_size=4)
    assert "pass data_batch_size=None" in "".join(refused.value.__notes__)
    assert estimate(pair, "is", num_samples=10, data_batch_size=None).log_px.shape == (6,)
