r"""Importance-weighted bounds per data point: IWAE, its sticking-the-landing and doubly reparameterized gradients.

For every data point ``x_n`` of a minibatch ``B`` of a data set of size ``N``, ``K`` reparameterized draws
``z_nk = g_phi(eps_nk, x_n)`` from the guide give the log weights (with a KL weight ``beta``, 1 by default)::

    log w_nk = log p_theta(x_n | z_nk) + beta * (log p_theta(z_nk) - log q_phi(z_nk | x_n))

and the IWAE bound (Burda et al. 2016)::

    L_K(x_n) = log (1/K) sum_k w_nk  <=  log p(x_n)        (beta = 1)

The loss is ``-(N / |B|) sum_{n in B} L_K(x_n)``: the subsample scale multiplies each data point's log-sum-exp
from outside. (Pyro's :class:`~pyro.infer.RenyiELBO` applies it to the log weights inside the log-sum-exp, which
changes the bound whenever ``|B| < N``.)

Every estimator here follows the contract of :class:`~inference.objectives.objective.ImportanceWeightedObjective`.
"""

import torch

from inference.importance import GradientNeeds
from inference.objectives.estimators import ESTIMATORS
from inference.objectives.objective import ImportanceWeightedObjective, PathwiseScaledSurrogate, log_mean_exp


@ESTIMATORS.register("iwae")
class IWAE(ImportanceWeightedObjective):
    r"""The importance-weighted bound ``L_K(x_n) = log (1/K) sum_k w_nk`` (Burda et al. 2016), per data point.

    Gradient (all guide sites reparameterized): the exact gradient of ``L_K`` at the drawn ``eps``::

        grad L_K = sum_k wbar_k grad log w_k,    wbar_k = w_k / sum_j w_j,

    through ``theta`` directly and through ``phi`` both along ``z_k = g_phi(eps_k)`` and in ``log q_phi``.
    Its guide gradient's signal-to-noise ratio falls as ``O(1 / sqrt(K))`` (Rainforth et al. 2018).
    ``K = 1`` is the ELBO. The subsample scale ``N / |B|`` multiplies ``L_K`` outside the log-sum-exp.

    Guide sites marked for parallel enumeration (:func:`pyro.infer.config_enumerate`, e.g. the class of a
    semi-supervised model) are summed exactly: each value ``y`` gets its own ``K`` draws and
    ``L_K(x_n) = log (1/K) sum_k sum_y p(x_n, y, z_nyk) / q(z_nyk | x_n, y)``, still a bound on ``log p(x_n)``
    (:mod:`inference.importance`); at ``K = 1`` it is tighter than ``TraceEnum_ELBO``'s
    ``sum_y q(y | x) [log p(x, y, z_y) - log q(y | x) - log q(z_y | x, y)]`` by Jensen's inequality over ``y``.

    References:
        [1] Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
        [2] T. Rainforth, A. Kosiorek, T. A. Le, C. Maddison, M. Igl, F. Wood, Y. W. Teh. Tighter Variational
            Bounds are Not Necessarily Better. ICML 2018.
    """

    importance_weighted_bound = True
    name = "iwae"
    needs = GradientNeeds(enumerate_guide=True)

    def per_example_objective(self, parts):
        return log_mean_exp(parts.log_weights)


@ESTIMATORS.register("iwae-stl")
class StickingTheLandingIWAE(ImportanceWeightedObjective):
    r"""IWAE with the sticking-the-landing gradient (Roeder et al. 2017): guide parameters stopped in ``log q``.

    Value: ``L_K`` as in :class:`IWAE`. Gradient::

        sum_k wbar_k [ grad_theta log p(x, z_k)  +  d/dz (log p(x, z) - log q_sg(phi)(z))|_{z_k} dz_k/dphi ]

    dropping the score term ``-sum_k wbar_k grad_phi log q_phi(z_k)``. For ``K = 1`` that term has mean zero, but
    for ``K > 1`` it does not, so this gradient is **biased** for ``L_K`` (Tucker et al. 2018); use
    :class:`DReGIWAE` for an unbiased one. When ``q`` is the exact posterior every ``log w_k = log p(x)`` is constant
    in ``z`` and the guide gradient is exactly zero for every draw.

    References:
        [1] G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
            Variational Inference. NeurIPS 2017.
        [2] G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte Carlo
            Objectives. ICLR 2019.
    """

    importance_weighted_bound = True
    name = "iwae-stl"
    needs = GradientNeeds(stop_guide_parameters=True)

    def per_example_objective(self, parts):
        return log_mean_exp(parts.log_weights)

    def per_example_surrogate(self, parts):
        return log_mean_exp(parts.log_weights_stopped)


@ESTIMATORS.register("iwae-dreg")
class DReGIWAE(ImportanceWeightedObjective):
    r"""IWAE with doubly reparameterized guide gradients (Tucker et al. 2019); the model's gradient is IWAE's.

    Value: ``L_K`` as in :class:`IWAE`. Applying the reparameterization trick a second time to the score term of
    the IWAE guide gradient gives, for KL weight ``beta``, the unbiased estimator::

        grad_phi L_K = sum_k [ (1 - beta) wbar_k + beta wbar_k^2 ] d/dz (log w_sg(phi)(z))|_{z_k} dz_k/dphi

    (``wbar_k^2`` at ``beta = 1``), and ``grad_theta L_K = sum_k wbar_k grad_theta log p(x, z_k)`` as in IWAE. Its
    guide SNR grows as ``O(sqrt(K))`` instead of falling. With the exact posterior as guide the guide gradient is
    exactly zero.

    Both come from one model pass and one backward pass: the surrogate ``sum_k wbar_k log p(x, z_k) - beta sum_k
    g_k log q_sg(phi)(z_k)`` (``g_k`` the guide weights above) gives ``theta`` IWAE's weights, and the gradient
    through ``z_k`` into ``log p`` is rescaled by ``g_k / wbar_k = (1 - beta) + beta wbar_k`` (returned with the
    surrogate as a :class:`~inference.objectives.objective.PathwiseScaledSurrogate`; finite even where ``wbar_k``
    underflows), which turns the guide's part into ``sum_k g_k d/dz log w_sg(phi)(z_k) dz_k/dphi``.

    Guide sites marked for parallel enumeration are summed as in :class:`IWAE`: the bound is over the ``Y K`` draws
    ``z_yk`` (``K`` per value ``y``), and since the double reparameterization holds draw by draw, ``wbar`` is
    normalized over all of them. Every reparameterized site must then be drawn after the enumerated ones (its value
    carries their dimension), as in a semi-supervised model's ``q(y | x) q(z | x, y)``.

    References:
        [1] G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte Carlo
            Objectives. ICLR 2019.
        [2] Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """

    importance_weighted_bound = True
    name = "iwae-dreg"
    needs = GradientNeeds(stop_guide_parameters=True, scale_model_pathwise=True, enumerate_guide=True)

    def per_example_objective(self, parts):
        return log_mean_exp(parts.log_weights)

    def per_example_surrogate(self, parts):
        beta = parts.kl_weight
        log_weights = parts.log_likelihood + beta * (parts.log_prior - parts.log_guide)  # (..., K, B): per stratum
        wbar = normalized_weights_of_strata(log_weights.expand(parts.log_guide_stopped.shape))
        guide_weights = (1 - beta) * wbar + beta * wbar**2
        log_joint = parts.log_likelihood + beta * parts.log_prior
        strata = tuple(range(wbar.dim() - 1))  # the enumerated values' dimensions and the particles'
        surrogate = (wbar * log_joint).sum(strata) - beta * (guide_weights * parts.log_guide_stopped).sum(strata)
        return PathwiseScaledSurrogate(surrogate, (1 - beta) + beta * wbar)  # guide_weights / wbar, not divided


def normalized_weights_of_strata(log_w):
    """Weights ``w_yk / sum_{y', k'} w_y'k'`` normalized over the particles and the enumerated values together
    (every dimension but the data points'), detached: for enumerated guide sites each (value, particle) pair is a
    draw of its own, and DReG's identity holds draw by draw."""
    flat = log_w.detach().reshape(-1, log_w.shape[-1])
    return torch.softmax(flat, 0).reshape(log_w.shape)
