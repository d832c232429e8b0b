"""Exact log p(x), one value per data point, where the model allows it.

Two cases are supported:

* **Analytic marginals.** A model given as a bound method (``obj.model``) of an object with a
  ``log_marginal(*args) -> Tensor`` method (or a callable that has such a method itself) is trusted to compute
  ``log p(x_n)`` in closed form, e.g. :class:`pyro_vae.linear_gaussian.LinearGaussian`, where
  ``x ~ N(b, W W^T + sigma^2 I)``.
* **Discrete latents, by enumeration.** When every latent site has finite support, Pyro's parallel enumeration
  (:func:`~pyro.infer.enum.config_enumerate` and :class:`~pyro.poutine.enum_messenger.EnumMessenger`, as in
  ``TraceEnum_ELBO``) evaluates ``log p(x_n, z)`` on the whole grid of values at once and

      log p(x_n) = log sum_z p(x_n, z)

  is a log-sum-exp over the enumeration dimensions. Latents must lie in the data plate and in no plate nested
  inside it (observations may use nested plates); otherwise the sum does not factor this simply.
"""

import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.util import prune_subsample_sites

from inference.importance import guess_max_plate_nesting, site_log_prob, subsample_factor


def analytic_log_marginal(model):
    """The ``log_marginal`` method that belongs to ``model`` (or its bound object), or ``None``."""
    owner = getattr(model, "__self__", None)
    for candidate in (model, owner):
        method = getattr(candidate, "log_marginal", None)
        if callable(method):
            return method
    return None


def _enumerated_trace(model, args, kwargs, max_plate_nesting):
    enumerated = poutine.enum(config_enumerate(model, "parallel"), first_available_dim=-(max_plate_nesting + 1))
    with poutine.block():
        return prune_subsample_sites(poutine.trace(enumerated).get_trace(*args, **kwargs))


def _unsupported(reason):
    return ValueError(
        f"exact log p(x) is not available for this model: {reason}. The 'exact' method needs either a model "
        "with an analytic log_marginal(*args) method (e.g. LinearGaussian.model) or a model whose latents are "
        "all discrete with finite support, inside the data plate; use method='ais' or 'is' instead."
    )


def enumerated_log_marginal(model, *args, data_plate="data", max_plate_nesting=None, **kwargs) -> torch.Tensor:
    """``log p(x_n) = log sum_z p(x_n, z)`` for every data point, summing discrete latents by enumeration."""
    if max_plate_nesting is None:
        with poutine.block():
            max_plate_nesting = guess_max_plate_nesting(model, lambda *a, **k: None, *args, **kwargs)
    trace = _enumerated_trace(model, args, kwargs, max_plate_nesting)
    total, batch_dim, batch_size = 0.0, None, 1
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        if not site["is_observed"] and site["infer"].get("_enumerate_dim") is None:
            raise _unsupported(f"latent site '{name}' is not enumerable ({type(site['fn']).__name__})")
        frames = {frame.name: frame for frame in site["cond_indep_stack"] if frame.vectorized}
        if data_plate is not None:
            if data_plate not in frames:
                raise _unsupported(f"site '{name}' is outside the data plate '{data_plate}'")
            if not site["is_observed"] and len(frames) > 1:
                raise _unsupported(f"latent site '{name}' lies in plates {sorted(frames)} besides '{data_plate}'")
            batch_dim, batch_size = frames[data_plate].dim, frames[data_plate].size
        log_p = site_log_prob(site, subsample_factor(frames.get(data_plate)))
        log_p = log_p.reshape((1,) * max(0, max_plate_nesting - log_p.dim()) + log_p.shape)
        # sum plates (not enumeration dims) except the data plate; keep positions for broadcasting
        plates = [d for d in range(-max_plate_nesting, 0) if d != batch_dim and log_p.shape[d] > 1]
        total = total + (log_p.sum(plates, keepdim=True) if plates else log_p)
    if isinstance(total, float):
        raise _unsupported("it has no sample sites")
    enum_dims = list(range(-total.dim(), -max_plate_nesting))
    log_px = total.logsumexp(enum_dims) if enum_dims else total
    if batch_dim is None:
        return log_px.sum().reshape(1)
    other = [d for d in range(-log_px.dim(), 0) if d != batch_dim]
    log_px = log_px.sum(other, keepdim=True) if other else log_px
    return log_px.reshape(-1).expand(batch_size)


@torch.no_grad()
def exact_log_marginal(model, *args, data_plate="data", max_plate_nesting=None, **kwargs) -> torch.Tensor:
    """Exact ``log p(x_n)`` per data point: the model's analytic ``log_marginal`` if it has one, else enumeration.

    :raises ValueError: naming what is supported, when neither applies.
    """
    analytic = analytic_log_marginal(model)
    if analytic is not None:
        return analytic(*args, **kwargs)
    return enumerated_log_marginal(model, *args, data_plate=data_plate, max_plate_nesting=max_plate_nesting, **kwargs)
