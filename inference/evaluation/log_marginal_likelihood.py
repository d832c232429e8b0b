"""Estimates of log p(x), one per data point, with standard errors and diagnostics.

``method`` chooses the estimator, a :class:`LogPxMethod` registered in :data:`LOG_PX_METHODS` with its own options
(a new method is one such class):

* ``"is"`` (default): importance sampling with the guide as proposal (below);
* ``"is-prior"``: the same with the prior ``p(z)`` as proposal, to show how much the guide buys;
* ``"ais"``: annealed importance sampling from the guide to the posterior (:mod:`inference.ais`);
* ``"exact"``: analytic or enumerated ``log p(x_n)`` where the model allows it (:mod:`inference.evaluation.exact`); the
  ELBO, ESS and k-hat then still describe the guide's importance weights.

For each data point ``x_n`` and ``K`` guide samples ``z_nk ~ q(z | x_n)``::

    log p_K(x_n) = log (1/K) sum_k p(x_n, z_nk) / q(z_nk | x_n)

is a stochastic lower bound on ``log p(x_n)`` (Burda et al. 2015): ``E[log p_K] <= log p(x_n)``, increasing in
``K`` and consistent as ``K -> inf``. The same draws give the ELBO estimate ``(1/K) sum_k log w_nk``.

Besides the per-example estimates this module reports

* the mean over examples and its standard error ``sd_n(log p_K(x_n)) / sqrt(N)`` (variation across the data set),
* a per-example Monte Carlo standard error from the delta method,
  ``se_n = sqrt((K / ESS_n - 1) / K)`` with ``ESS_n = (sum_k w_nk)^2 / sum_k w_nk^2`` (Kong 1992), which is
  what separates two estimators run on the *same* examples.

With importance sampling each example also gets the Pareto k-hat of its weights (:mod:`inference.diagnostics`).

Particles are vectorized and chunked (``particle_batch_size``) and so are data points (``data_batch_size``), so
memory stays bounded at ``K = 5000`` on a whole test split. With a ``seed`` every chunk of data points draws from
a generator seeded by the seed and the chunk's first index, so an example's estimate does not depend on which
other chunks ran before it; inside a ``torch.distributed`` process group the chunks are then shared out among the
ranks and the per-example results gathered (:mod:`inference.training.distributed`), exactly as one process
computes them.

References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    R. M. Neal. Annealed importance sampling. Statistics and Computing 11, 2001.
"""

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import pyro
import torch
from tqdm.auto import tqdm

from inference.allocator import keeps_freed_memory
from inference.data_rows import num_rows, rows, rows_in
from inference.evaluation.ais import annealed_importance_sampling, prior_proposal
from inference.evaluation.diagnostics import KHAT_BAD, effective_sample_size, pareto_khat
from inference.evaluation.exact import exact_log_marginal
from inference.importance import forked_rng, guess_max_plate_nesting, noted_on_failure, per_example_log_weights
from inference.registry import Registry
from inference.training import distributed

LOG_PX_METHODS = Registry("log p(x) method")
"""The log p(x) methods by name: each a :class:`LogPxMethod` registered under its ``name``."""

KHAT_WARNING_FRACTION = 0.1
"""More than this fraction of examples with Pareto k-hat above 0.7 makes an estimate unreliable."""
ESS_WARNING = 10.0
"""A median effective sample size below this makes an estimate unreliable."""


class UnreliableEstimateWarning(UserWarning):
    """An estimate of log p(x) whose importance weights are too heavy-tailed, or rest on too few draws, for its
    value or its Monte Carlo standard error to be trusted (see :attr:`LogMarginalLikelihood.mc_stderr_reliable`)."""


@dataclass
class LogMarginalLikelihood:
    """Per-example estimates of log p(x); every tensor has one entry per data point.

    ``elbo`` is the mean log weight of the proposal's own draws (``E_q[log p(x, z) - log q(z | x)]``, for
    ``"ais"`` from the chains' starting points); ``mc_stderr`` and ``ess`` come from the weights across particles
    (across chains for ``"ais"``; ``mc_stderr`` is 0 for ``"exact"``); ``khat`` is the Pareto k-hat of the
    importance weights (``None`` for ``"ais"``, whose few chains are too few to fit a tail); ``monte_carlo`` is the
    method's (:class:`LogPxMethod`): False for an exact value, which its weights do not judge.
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    mc_stderr: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    method: str = "is"
    khat: Optional[torch.Tensor] = None
    monte_carlo: bool = True

    @classmethod
    def of_chunks(cls, chunks, method: "LogPxMethod") -> "LogMarginalLikelihood":
        """The result of ``method``'s :class:`PerExampleEstimate` for each chunk of data points, in order."""
        khat = None if chunks[0].khat is None else torch.cat([chunk.khat for chunk in chunks])
        fields = {name: torch.cat([getattr(chunk, name) for chunk in chunks]) for name in WeightSummary._fields}
        return cls(
            **fields, num_samples=method.num_draws, method=method.name, khat=khat, monte_carlo=method.monte_carlo
        )

    @property
    def num_examples(self) -> int:
        return self.log_px.numel()

    @property
    def mean(self) -> float:
        return self.log_px.mean().item()

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`mean` across data points."""
        return _stderr_of_mean(self.log_px)

    @property
    def mc_stderr_of_mean(self) -> float:
        """Monte Carlo standard error of :attr:`mean` (examples' draws are independent)."""
        return (self.mc_stderr.pow(2).sum().sqrt() / self.num_examples).item()

    @property
    def elbo_mean(self) -> float:
        return self.elbo.mean().item()

    @property
    def khat_fraction_above(self) -> Optional[float]:
        """The fraction of examples whose Pareto k-hat exceeds 0.7 (``None`` without k-hat)."""
        return None if self.khat is None else (self.khat > KHAT_BAD).double().mean().item()

    @property
    def mc_stderr_reliable(self) -> bool:
        """Whether :attr:`mc_stderr` can be trusted. The delta-method error ``sqrt((K / ESS - 1) / K)`` is computed
        from the same weights it judges: when their tail is heavy (k-hat > 0.7, where the weights' variance may be
        infinite) or their effective sample size small, it understates the error, and with ``ESS = 1`` it cannot
        exceed 1 nat whatever the truth. Reliable means at most 10% of examples above k-hat 0.7 and a median ESS of
        at least 10 (always, for an estimate without Monte Carlo error such as ``"exact"``)."""
        return not self.reliability_warnings()

    def reliability_warnings(self, fix="Use more samples (num_samples), method 'ais', or a richer guide.") -> list:
        """What a reader of the estimate must know when its weights are heavy-tailed or degenerate; ``fix`` ends
        each message."""
        found = []
        if not self.monte_carlo:
            return found
        fraction = self.khat_fraction_above
        if fraction is not None and fraction > KHAT_WARNING_FRACTION:
            found.append(
                f"{fraction:.0%} of the examples have Pareto k-hat above 0.7: their importance weights are so "
                "heavy-tailed that the estimate can lie far below log p(x), and its Monte Carlo standard error "
                f"({self.mc_stderr_of_mean:.3g}) understates the error. {fix}"
            )
        median_ess = self.ess.median().item()
        if median_ess < ESS_WARNING:
            found.append(
                f"the median effective sample size is {median_ess:.1f} of {self.num_samples} draws per example: the "
                f"estimate rests on a handful of draws. {fix}"
            )
        return found

    def summary(self) -> dict:
        """Plain floats for ``eval.json``: nats per example."""
        return {
            "method": self.method,
            "log_px": self.mean,
            "log_px_stderr": self.stderr,
            "log_px_mc_stderr": self.mc_stderr_of_mean,
            "elbo": self.elbo_mean,
            "elbo_stderr": _stderr_of_mean(self.elbo),
            "gap": self.mean - self.elbo_mean,
            "ess_mean": self.ess.mean().item(),
            "mc_stderr_reliable": self.mc_stderr_reliable,
            "num_samples": self.num_samples,
            "num_examples": self.num_examples,
            **self._khat_summary(),
        }

    def _khat_summary(self) -> dict:
        if self.khat is None:
            return {}
        return {
            "khat_mean": self.khat.mean().item(),
            "khat_max": self.khat.max().item(),
            "khat_fraction_above_0.7": (self.khat > KHAT_BAD).double().mean().item(),
        }


def _stderr_of_mean(values: torch.Tensor) -> float:
    n = values.numel()
    return (values.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")


class WeightSummary(NamedTuple):
    """Per-column summaries of ``(K, N)`` log weights."""

    log_px: torch.Tensor  # log (1/K) sum_k w_k
    elbo: torch.Tensor  # (1/K) sum_k log w_k
    mc_stderr: torch.Tensor  # the delta-method Monte Carlo standard error of log_px
    ess: torch.Tensor  # Kong's effective sample size


class PerExampleEstimate(NamedTuple):
    """What a log p(x) method's ``estimate`` returns for the data points of one chunk: one entry per data point."""

    log_px: torch.Tensor
    elbo: torch.Tensor
    mc_stderr: torch.Tensor
    ess: torch.Tensor
    khat: Optional[torch.Tensor] = None  # the Pareto k-hat of the importance weights, where there are enough


class LogPxMethod:
    """What a log p(x) method provides. A new method is one subclass, registered with
    ``@LOG_PX_METHODS.register(name)``; nothing else in :mod:`inference` or :mod:`pyro_vae` knows it by name, and
    from then on ``log_marginal_likelihood(..., method=name)`` and ``pyro-vae evaluate --method name`` run it
    (``examples/custom_log_px_method.py`` is one).

    * The constructor takes the method's options as keywords and checks them. :func:`log_marginal_likelihood`
      hands it each of its keywords that the constructor names; a run's ``eval.method.options`` (and ``evaluate``'s
      ``--method-options``, ``--num-samples``, ...) arrive here too.
    * ``name``: the name it is registered under, which the results and reports carry.
    * ``num_draws``: the draws per data point behind each estimate (reported as ``num_samples``), which
      ``draws_name`` names in messages (``"samples"``; AIS's are ``"chains"``).
    * ``proposal(model, guide)``: the program its draws start from; its plates are those the draws take.
    * ``needs_guide_density``: whether the estimate divides by the guide's density ``q(z | x)``, so that a guide
      without one (a point mass) cannot serve.
    * ``monte_carlo``: whether the estimate has Monte Carlo error, so that heavy-tailed or degenerate weights make
      it unreliable (not so for an exact value).
    * ``estimate(model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles=None)``: a
      :class:`PerExampleEstimate` for the data points of ``args`` (``kwargs`` go to the model and guide), calling
      ``on_particles(k)`` after each pass of ``k`` draws per data point (a progress bar's update).
    """

    name: str
    draws_name = "samples"
    needs_guide_density = True
    monte_carlo = True

    @property
    def num_draws(self) -> int:
        raise NotImplementedError

    def proposal(self, model, guide):
        raise NotImplementedError

    def estimate(
        self, model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles=None
    ) -> PerExampleEstimate:
        raise NotImplementedError


def summarize_log_weights(log_w: torch.Tensor) -> WeightSummary:
    """From ``(K, N)`` log weights: IWAE estimate, ELBO estimate, Monte Carlo standard error and ESS per column."""
    num_samples = log_w.shape[0]
    log_px = torch.logsumexp(log_w, 0) - math.log(num_samples)
    elbo = log_w.mean(0)
    ess = effective_sample_size(log_w)
    mc_stderr = ((num_samples / ess - 1).clamp(min=0) / num_samples).sqrt()
    return WeightSummary(log_px, elbo, mc_stderr, ess)


@torch.no_grad()
def importance_log_weights(
    model,
    guide,
    *args,
    num_samples,
    particle_batch_size=None,
    data_plate="data",
    max_plate_nesting=None,
    on_particles=None,
    vectorize_particles=True,
    **kwargs,
):
    """``(num_samples, batch_size)`` log weights (``(num_samples, 1)`` with ``data_plate=None``), drawn
    ``particle_batch_size`` particles at a time (one a pass without a particle plate if not
    ``vectorize_particles``), enumerated guide sites summed; ``on_particles(k)`` is called after each pass of ``k``
    particles (a progress bar's update).

    Distribution arguments and values are validated (if validation is on) in the first pass only: the later
    passes see the same data and distributions, and the support checks of ``K x N x D`` values would otherwise
    cost a sizeable part of the time."""
    chunk = particles_per_pass(particle_batch_size, num_samples, args, data_plate) if vectorize_particles else 1
    pieces = []
    for start in range(0, num_samples, chunk):
        with contextlib.nullcontext() if start == 0 else pyro.validation_enabled(False):
            pieces.append(
                per_example_log_weights(
                    model,
                    guide,
                    *args,
                    num_particles=min(chunk, num_samples - start),
                    data_plate=data_plate,
                    max_plate_nesting=max_plate_nesting,
                    vectorize_particles=vectorize_particles,
                    **kwargs,
                )
            )
        if on_particles is not None:
            on_particles(pieces[-1].shape[0])
    return torch.cat(pieces, 0)


DRAWS_PER_PASS = {"cpu": 2048, "cuda": 200_000}
"""Draws (data points x particles) per vectorized pass under ``particle_batch_size="auto"``, by device type. On CPU
under glibc's default ``malloc``, 2048 draws (6 MB of ``draws x 784`` logits) keeps every buffer below the size
that the C library hands back to the system after each pass (and page-faults in again on the next); where
:mod:`inference.allocator` keeps freed memory (``pyro-vae`` does) the CPU takes
:data:`CPU_DRAWS_PER_PASS_KEEPING_FREED_MEMORY` instead. On a GPU the passes are as large as fits in a quarter of
the free memory, up to 200,000 draws. Other devices take :data:`DRAWS_PER_PASS_OTHERWISE`. The sizes were chosen
by ``benchmarks/log_px_speed.py`` and ``benchmarks/allocator.py``; their timings are in ``BENCHMARKS.md``."""
#: CPU passes where ``malloc`` keeps freed memory: 26 MB of logits, the largest pass whose buffers stay under the
#: 32 MB above which glibc maps every allocation afresh (timings of other sizes in ``BENCHMARKS.md``).
CPU_DRAWS_PER_PASS_KEEPING_FREED_MEMORY = 8192
DRAWS_PER_PASS_OTHERWISE = 50_000
#: On CUDA a pass also keeps within a quarter of the free device memory, counting this many bytes per draw and
#: data value (the decoder's outputs and the likelihood's terms: the H200 run peaked at about 8.5).
BYTES_PER_DRAW_AND_VALUE = 16


def particles_per_pass(particle_batch_size, num_samples: int, args, data_plate) -> int:
    """Particles per vectorized pass: ``particle_batch_size`` itself, all ``num_samples`` for ``None``, or for
    ``"auto"`` as many as make :data:`DRAWS_PER_PASS` draws with the data points of ``args`` on their device
    (on CPU more where ``malloc`` keeps freed memory; on CUDA no more than fit in a quarter of the free memory)."""
    if particle_batch_size != "auto":
        return particle_batch_size or num_samples
    tensors = [a for a in args if torch.is_tensor(a)]
    device = tensors[0].device if tensors else torch.device("cpu")
    examples = rows_in(args) if data_plate is not None else 1
    draws = DRAWS_PER_PASS.get(device.type, DRAWS_PER_PASS_OTHERWISE)
    if device.type == "cpu" and keeps_freed_memory():
        draws = CPU_DRAWS_PER_PASS_KEEPING_FREED_MEMORY
    if device.type == "cuda":
        values = sum(t.numel() for t in tensors) // max(examples, 1)  # data values per data point
        draws = min(draws, draws_within_memory(torch.cuda.mem_get_info(device)[0], values))
    return max(1, min(num_samples, draws // max(examples, 1)))


def draws_within_memory(free_bytes: int, values_per_example: int) -> int:
    """Draws whose pass fits in a quarter of ``free_bytes``, at :data:`BYTES_PER_DRAW_AND_VALUE` per value."""
    return free_bytes // 4 // (BYTES_PER_DRAW_AND_VALUE * max(values_per_example, 1))


@LOG_PX_METHODS.register("is")
class ImportanceSampling(LogPxMethod):
    """``"is"``: ``log (1/K) sum_k p(x_n, z_nk) / q(z_nk | x_n)`` with ``z_nk`` drawn from the guide.

    :param int num_samples: ``K`` per data point (Burda et al. 2016 use 5000).
    :param particle_batch_size: particles per vectorized pass, which bounds memory; ``None``: all ``K`` at once;
        ``"auto"`` (default): as many as make :data:`DRAWS_PER_PASS` draws with the data points of a pass.
    :param bool vectorize_particles: ``False`` draws one particle a pass without a particle plate, for a guide that
        cannot take a leading particle dimension (slower: ``K`` passes).

    Guide sites marked for parallel enumeration are summed exactly (:mod:`inference.importance`): each value ``y``
    gets its own ``K`` draws, and ``log p_K(x_n) = log (1/K) sum_k sum_y p(x_n, y, z_nyk) / q(z_nyk | x_n, y)``.
    """

    name = "is"

    def __init__(
        self,
        num_samples: int = 5000,
        particle_batch_size: Union[int, str, None] = "auto",
        vectorize_particles: bool = True,
    ):
        check_positive_int(num_samples, "num_samples")
        if particle_batch_size not in (None, "auto"):
            check_positive_int(particle_batch_size, "particle_batch_size", 'or "auto" or None')
        self.num_samples = num_samples
        self.particle_batch_size = particle_batch_size
        self.vectorize_particles = vectorize_particles

    @property
    def num_draws(self) -> int:
        """Draws per data point behind each estimate (reported as ``num_samples``)."""
        return self.num_samples

    def proposal(self, model, guide):
        return guide

    def estimate(
        self, model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles=None
    ) -> PerExampleEstimate:
        """The estimates for the data points of ``args``; ``on_particles(k)`` after each pass of ``k``
        particles."""
        log_w = importance_log_weights(
            model,
            self.proposal(model, guide),
            *args,
            num_samples=self.num_samples,
            particle_batch_size=self.particle_batch_size,
            data_plate=data_plate,
            max_plate_nesting=max_plate_nesting,
            on_particles=on_particles,
            vectorize_particles=self.vectorize_particles,
            **kwargs,
        )
        if not torch.isfinite(log_w).all():
            raise FloatingPointError(
                "non-finite importance weights: the model or guide produced NaN/inf log densities "
                "(check the data range against the likelihood, e.g. Bernoulli needs values in [0, 1])"
            )
        return PerExampleEstimate(*summarize_log_weights(log_w), khat=pareto_khat(log_w))


@LOG_PX_METHODS.register("is-prior")
class PriorImportanceSampling(ImportanceSampling):
    """``"is-prior"``: importance sampling with the prior ``p(z)`` as proposal, to show what the guide buys."""

    name = "is-prior"
    needs_guide_density = False

    def proposal(self, model, guide):
        return prior_proposal(model)


@LOG_PX_METHODS.register("exact")
class ExactLogMarginal(ImportanceSampling):
    """``"exact"``: analytic or enumerated ``log p(x_n)`` (:mod:`inference.evaluation.exact`); the ELBO, ESS and
    k-hat still describe the guide's ``num_samples`` importance weights, and the Monte Carlo error is 0."""

    name = "exact"
    needs_guide_density = False  # the guide's weights only describe the guide
    monte_carlo = False

    def estimate(self, model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles=None):
        weights = super().estimate(model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles)
        log_px = exact_log_marginal(model, *args, data_plate=data_plate, max_plate_nesting=max_plate_nesting, **kwargs)
        return weights._replace(log_px=log_px.reshape(-1), mc_stderr=torch.zeros_like(weights.mc_stderr))


@LOG_PX_METHODS.register("ais")
class AnnealedImportanceSampling(LogPxMethod):
    """``"ais"``: annealed importance sampling from the guide (or prior) to the posterior with adaptive HMC
    (Neal 2001); its options and their defaults are those of
    :func:`~inference.evaluation.ais.annealed_importance_sampling`. The ELBO is that of the chains' starting
    points; there is no k-hat (too few chains to fit a tail)."""

    name = "ais"
    draws_name = "chains"

    def __init__(self, **options):
        bound = self.__signature__.bind(**options)
        bound.apply_defaults()
        self.options = dict(bound.arguments)
        for key in ("num_steps", "num_chains", "num_leapfrog_steps"):
            check_positive_int(self.options[key], key)

    @property
    def num_draws(self) -> int:
        return self.options["num_chains"]

    @property
    def needs_guide_density(self) -> bool:
        return self.options["proposal"] != "prior"

    def proposal(self, model, guide):
        return prior_proposal(model) if self.options["proposal"] == "prior" else guide

    def estimate(self, model, guide, args, kwargs, data_plate, max_plate_nesting, on_particles=None):
        ais = annealed_importance_sampling(
            model, guide, *args, data_plate=data_plate, max_plate_nesting=max_plate_nesting, **self.options, **kwargs
        )
        summary = summarize_log_weights(ais.log_weights)
        return PerExampleEstimate(*summary._replace(elbo=ais.proposal_log_weights.mean(0)))


# The options of "ais" are the keyword options of annealed_importance_sampling, defaults included: one place.
AnnealedImportanceSampling.__signature__ = inspect.Signature(
    [
        parameter
        for name, parameter in inspect.signature(annealed_importance_sampling).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY
        and name not in ("initial_latents", "data_plate", "max_plate_nesting", "progress")
    ]
)


def check_positive_int(value, name, alternatives=""):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer{' ' + alternatives if alternatives else ''}, got {value!r}"
        )


def log_px_method(method="is", **options):
    """The log p(x) method registered under ``method`` (see :data:`LOG_PX_METHODS`), built with ``options``."""
    return LOG_PX_METHODS.build(method, **options)


def log_marginal_likelihood(
    model,
    guide,
    *args,
    method="is",
    data_batch_size=100,
    data_plate="data",
    max_plate_nesting=None,
    progress=False,
    seed=None,
    **kwargs,
) -> LogMarginalLikelihood:
    """Estimate log p(x_n) for every data point ``n`` of ``*args``.

    :param model: a Pyro model whose data points are independent under the plate named ``data_plate``.
    :param guide: a Pyro guide with the same plate; its samples are the importance proposals.
    :param args: the model's arguments. With ``data_batch_size`` set, every batched argument (a tensor along its
        first dimension, a ``PackedSequence`` by its sequences, or a type given to
        :func:`inference.data_rows.register_rows`) is split into chunks of that many data points; an argument of an
        unknown type is refused before anything runs.
    :param method: a name from :data:`LOG_PX_METHODS` (see the module docstring), or a method object.
    :param int data_batch_size: data points per pass (``None``: all at once).
    :param str data_plate: name of the plate over data points; ``None`` treats the batch as one data point.
    :param int max_plate_nesting: optional; guessed by running the model once if not given.
    :param bool progress: show a tqdm progress bar of the draws (examples x particles), moving after every
        pass of particles, with the time left.
    :param int seed: seed each chunk's draws by ``seed`` and the chunk's first index (the global generator is
        left as it was); needed to share the chunks among the ranks of a process group, where it is required.
    :param kwargs: options of the method, by name (``num_samples`` and ``particle_batch_size`` of ``"is"``;
        ``num_steps``, ``num_chains``, ... of ``"ais"``); any other keyword goes to the model and guide, whole.
    :returns: :class:`LogMarginalLikelihood`. When more than 10% of the examples have a Pareto k-hat above 0.7,
        or the median effective sample size is below 10, it warns (:class:`UnreliableEstimateWarning`) and its
        ``mc_stderr_reliable`` is False.
    """
    if isinstance(method, str):
        accepted = inspect.signature(LOG_PX_METHODS.get(method)).parameters
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in accepted}
        method = log_px_method(method, **options)
    if data_plate is None or data_batch_size is None:
        spans = [(0, None)]
    else:
        n = num_rows(args, "data_batch_size", "Pass data_batch_size=None to evaluate all arguments in one batch.")
        spans = [(start, min(start + data_batch_size, n)) for start in range(0, n, data_batch_size)]
    if max_plate_nesting is None:  # once here, not once per chunk
        first = args if spans[0][1] is None else rows(args, *spans[0])
        max_plate_nesting = guess_max_plate_nesting(model, method.proposal(model, guide), *first, **kwargs)
    if distributed.is_distributed() and seed is None:
        raise ValueError(
            "log_marginal_likelihood in a process group needs a seed, so that every example's draws are the same "
            "whichever rank scores it: pass seed=..."
        )
    rank, world_size = distributed.rank(), distributed.world_size()
    mine = {i: span for i, span in enumerate(spans) if i % world_size == rank}
    results = {}
    whole = rows_in(args) if data_plate is not None else 1  # the examples of an unsplit batch
    num_examples = {i: whole if stop is None else stop - start for i, (start, stop) in mine.items()}
    bar = tqdm(
        total=sum(num_examples.values()) * method.num_draws,
        desc=f"log p(x), {method.name}",
        unit="draw",
        unit_scale=True,
        disable=not progress or rank > 0,
        leave=False,
    )
    with bar:
        for i, (start, stop) in mine.items():
            chunk_args = args if stop is None else rows(args, start, stop)
            done = bar.n
            with chunk_seeded(seed, start), noted_on_failure(CHUNK_NOTE if stop is not None else None):
                results[i] = method.estimate(
                    model,
                    guide,
                    chunk_args,
                    kwargs,
                    data_plate,
                    max_plate_nesting,
                    on_particles=lambda k, size=num_examples[i]: bar.update(k * size),
                )
            bar.update(done + num_examples[i] * method.num_draws - bar.n)  # methods that report no passes
    if distributed.is_distributed():
        results = {i: PerExampleEstimate(*map(_to_cpu, result)) for i, result in results.items()}
    result = LogMarginalLikelihood.of_chunks(distributed.gather_in_order(results), method)
    for message in result.reliability_warnings():
        warnings.warn(message, UnreliableEstimateWarning, stacklevel=2)
    return result


CHUNK_NOTE = (
    "The evaluation split the data into chunks of data_batch_size points. A guide with parameters for each data "
    "point (an AutoNormal or a pyro.param fitted on the whole set) cannot take a chunk: pass data_batch_size=None."
)


def chunk_seeded(seed, start):
    """A context whose draws come from a generator seeded by ``seed`` and a chunk's first index ``start``; the
    global generator is restored afterwards. With ``seed=None``, no change: draws continue the global stream."""
    if seed is None:
        return contextlib.nullcontext()
    return _seeded(seed * 1_000_003 + start)


@contextlib.contextmanager
def _seeded(value):
    with forked_rng():
        torch.manual_seed(value)
        yield


def _to_cpu(value):
    return value.cpu() if torch.is_tensor(value) else value
