"""Stopping one gradient path through a particle ``z = g_phi(eps)`` while keeping the others.

* :class:`DetachSamples` cuts the path through the sampled values while the program runs: the guide's later
  sites and the model see ``z.detach()``, so ``log p`` and ``log q`` keep only their gradients through
  distribution parameters (what score-function estimators need).
* :func:`detached_values` does the same to a recorded trace, so the model can be replayed at ``z.detach()``:
  ``log p(x, z)`` then has a gradient to ``theta`` only (DReG and PIWAE keep model and guide gradients apart so).
* :func:`stopped_guide_trace` detaches the guide's distribution parameters instead, so ``log q_sg(phi)(z)`` has a
  gradient through ``z`` only (sticking-the-landing and DReG).
* :class:`StopParametersAfterDrawing` does that while the guide runs: each latent site draws ``z`` from its
  distribution and then keeps a copy with detached parameters, so the trace scores ``log q_sg(phi)(z)`` once
  (sticking-the-landing through Pyro's ``Trace_ELBO``).
* :class:`PathwiseValues` keeps every path but rescales the one through ``z`` into the model, per particle
  and data point, by a factor known only once the log weights are: it gives the model's parameters and the path
  ``z -> log p(x, z)`` different weights from one model pass (DReG), where :func:`detached_values` needs two.
"""

import copy
import math
import weakref

import pyro.poutine as poutine
import torch
from pyro.distributions import Delta
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import Distribution
from torch.distributions.transforms import Transform


class DetachSamples(Messenger):
    """Cut the pathwise gradient of every latent sample: downstream code (the rest of the guide, and the model
    replayed on the guide's trace) sees ``z.detach()``, so only score-function terms can carry gradient to the
    guide. Used as a context manager *around* :func:`~inference.importance.vectorized_traces`, so the traces record
    the detached values (post-processing runs from the outermost handler inwards)."""

    def _pyro_post_sample(self, msg):
        if not msg["is_observed"] and not isinstance(msg["fn"], _Subsample) and torch.is_tensor(msg["value"]):
            msg["value"] = msg["value"].detach()


class StopParametersAfterDrawing(Messenger):
    """Draw each latent site's value from its distribution (``rsample``: the path ``z = g_phi(eps)`` keeps its
    gradient), then leave the site a copy of the distribution with its parameters detached
    (:func:`detach_distribution_parameters`), which the trace records and scores: ``log q_sg(phi)(z)``.

    It draws where it handles the site, so it must wrap the program outside every handler that changes a site's
    distribution (plates broadcasting it, Pyro's plate of vectorized particles); inner handlers process a site
    first. A site whose value is already given (observed, or set by another handler) is left alone."""

    def _process_message(self, msg):
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and msg["value"] is None
            and not msg["done"]
            and not isinstance(msg["fn"], _Subsample)
        ):
            msg["value"] = msg["fn"](*msg["args"], **msg["kwargs"])
            msg["fn"] = detach_distribution_parameters(msg["fn"])


def detached_values(trace: poutine.Trace) -> poutine.Trace:
    """A copy of ``trace`` whose sample values are detached, to replay a program at ``z.detach()``."""
    detached = poutine.Trace()
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and torch.is_tensor(site["value"]):
            site = dict(site, value=site["value"].detach())
        detached.add_node(name, **site)
    return detached


class PathwiseValues:
    """The latent values the model was replayed on, each an identity view of the guide's draw, whose gradient along
    ``z -> log p(x, z)`` can be rescaled per particle and data point once the log weights are known.

    The model sees ``z`` unchanged. :meth:`scale_gradients` multiplies the gradient reaching each view by a factor
    ``r_nk`` of the log weights' shape, by a tensor hook bound to that factor (torch's own way of rescaling a
    gradient), while the model's own parameters receive theirs unscaled: a surrogate ``sum_k a_k log p(x, z_k)``
    then gives ``theta`` the weights ``a_k`` and the path through ``z`` the weights ``a_k r_k``. The guide's own
    use of ``z`` (its log density) is not a view and keeps its gradient.
    """

    def __init__(self, parts=()):
        self.views = []  # (view, shape the (K, B) factor takes against it)
        self.parts = list(parts)  # one per draw of unvectorized particles, concatenated along the particles

    def view_of(self, value: torch.Tensor, shape) -> torch.Tensor:
        """An identity view of ``value`` for the model to be replayed on, whose gradient a factor viewed as
        ``shape`` will rescale."""
        view = value.view_as(value)
        self.views.append((view, tuple(shape)))
        return view

    def scale_gradients(self, factor: torch.Tensor) -> None:
        """Multiply the gradient through every view by ``r`` (of the log weights' shape ``(K, B)``; detached: a
        weight, not a path)."""
        factor = factor.detach()
        if self.parts:
            for part, piece in zip(self.parts, factor.split([1] * len(self.parts), dim=-2)):
                part.scale_gradients(piece)
            return
        for view, shape in self.views:
            if factor.numel() != math.prod(shape):
                raise RuntimeError(
                    f"a latent value's gradient is to be rescaled by factors of shape {tuple(factor.shape)}, but the "
                    f"value has room for {shape}: a reparameterized guide site drawn before an enumerated one is "
                    "shared by every enumerated value, so DReG cannot weigh it per value. Draw the enumerated sites "
                    "first, or use 'iwae'."
                )
            view.register_hook(_multiplied_by(factor.reshape(shape)))


def _multiplied_by(factor: torch.Tensor):
    """A gradient hook multiplying the gradient by ``factor``."""
    return lambda grad: grad * factor


def pathwise_scaled_values(trace: poutine.Trace, values: PathwiseValues, factor_shape) -> poutine.Trace:
    """A copy of ``trace`` whose reparameterized latent values are views recorded in ``values``, to replay the
    model on; ``factor_shape(name, site)`` says how the ``(K, B)`` factor broadcasts against the site's value."""
    scaled = poutine.Trace()
    for name, site in trace.nodes.items():
        value = site.get("value")
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and not isinstance(site["fn"], _Subsample)
            and torch.is_tensor(value)
            and value.requires_grad
        ):
            site = dict(site, value=values.view_of(value, factor_shape(name, site)))
        scaled.add_node(name, **site)
    return scaled


def detach_distribution_parameters(fn: Distribution, _copies=None) -> Distribution:
    """A copy of ``fn`` whose parameters are detached, so ``log_prob(z)`` has a gradient only through ``z``.

    Recurses through wrappers (``Independent``, masked, expanded, transformed distributions and their transforms),
    copying each object once, so references between them (a transform and the inverse it holds, which holds it
    back) are copied as references between the copies; caches that would carry the old parameters (a transform's
    cached pre-image, an inverse held by weak reference) are dropped.
    """
    copies = {} if _copies is None else _copies
    if isinstance(fn, torch.nn.Module):
        raise ValueError(
            f"cannot detach the parameters of {type(fn).__name__}: it is an nn.Module (e.g. a normalizing flow), "
            "whose parameters are read when it is called. Sticking-the-landing and DReG estimators need a guide "
            "whose distributions hold their parameters as tensors; use 'iwae' or 'elbo' with this guide."
        )
    if torch.is_tensor(fn):
        return fn.detach()
    if isinstance(fn, weakref.ref):
        return None  # a transform's cached inverse, rebuilt on demand from the detached copy
    if isinstance(fn, (list, tuple)):
        return type(fn)(detach_distribution_parameters(part, copies) for part in fn)
    if isinstance(fn, (Distribution, Transform)):
        if id(fn) in copies:
            return copies[id(fn)]
        detached = copies[id(fn)] = copy.copy(fn)
        for key, value in vars(fn).items():
            if key == "_cached_x_y":
                value = (None, None)  # the cached pre-image would carry the old parameters' graph
            else:
                value = detach_distribution_parameters(value, copies)
            object.__setattr__(detached, key, value)
        return detached
    return fn


def stopped_guide_trace(guide_trace: poutine.Trace) -> poutine.Trace:
    """A copy of ``guide_trace`` whose sample sites' distributions have their parameters detached: the log density
    ``log q_sg(phi)(z)`` it gives keeps its gradient through the (reparameterized) values ``z`` only."""
    stopped = poutine.Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            check_no_pathwise_jacobian(name, site)
            site = dict(site, fn=detach_distribution_parameters(site["fn"]))
            if site["fn"].log_prob(site["value"].detach()).requires_grad:
                raise ValueError(
                    f"guide site '{name}': its distribution {type(site['fn']).__name__} still depends on "
                    "parameters after detaching (they are captured outside its tensor attributes), so "
                    "sticking-the-landing / DReG cannot stop their gradient. Use 'iwae' or 'elbo' instead."
                )
        stopped.add_node(name, **site)
    return stopped


def check_no_pathwise_jacobian(name, site):
    """Raise a clear error for an autoguide's ``Delta`` site whose log-Jacobian depends on ``z``: stopping the
    guide's parameters would also stop that pathwise term, biasing the gradient."""
    fn = site["fn"]
    if isinstance(fn, Delta) and torch.is_tensor(fn.log_density) and fn.log_density.requires_grad:
        raise ValueError(
            f"guide site '{name}' passes on a value drawn at an auxiliary site through a constraining transform "
            "(an autoguide on a constrained latent), whose log-Jacobian depends on z: sticking-the-landing and "
            "DReG cannot stop the guide's parameters there. Use 'iwae' or 'elbo' instead."
        )
