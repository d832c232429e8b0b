"""Priors p(z), chosen by name from :data:`PRIORS`.

A prior is a :class:`~pyro_vae.components.base.Prior` built as ``Prior(latent_dim=...)`` whose ``forward()`` returns
a distribution with ``batch_shape == ()`` and ``event_shape == (latent_dim,)``; the VAE's data plate broadcasts it
over examples (and the estimators' particle plate over particles). Learnable priors hold their parameters as module
parameters. A prior that is a function of the guide (the VampPrior) says ``needs_posterior = True`` and is given the
VAE's ``posterior`` by :meth:`VampPrior.attach` (capabilities: :mod:`pyro_vae.components.base`)."""

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from inference.registry import Registry
from pyro_vae.components.base import Prior
from pyro_vae.components.guides import inverse_softplus

PRIORS = Registry("prior", base=Prior)


@PRIORS.register("normal")
class StandardNormalPrior(Prior):
    """``p(z) = N(0, I_latent_dim)``."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, 1.0).to_event(1)


@PRIORS.register("learned-normal")
class LearnedNormalPrior(Prior):
    """``p(z) = N(mu, diag(sigma^2))`` with learned ``mu`` and ``sigma = softplus(.)`` (initialised at 0 and 1)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), inverse_softplus(1.0)))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)


@PRIORS.register("mixture")
class MixtureOfGaussiansPrior(Prior):
    """``p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))``: ``num_components`` diagonal Gaussians with learned
    weights ``pi = softmax(.)``, means (initialised from ``N(0, init_spread^2)``) and scales (initialised at 1).
    """

    def __init__(self, latent_dim: int, num_components: int = 10, init_spread: float = 1.0):
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be a positive integer, got {num_components}")
        self.latent_dim = latent_dim
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(init_spread * torch.randn(num_components, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((num_components, latent_dim), inverse_softplus(1.0)))

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.locs, F.softplus(self.raw_scales)).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


@PRIORS.register("vamp")
class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): ``p(z) = sum_k w_k q(z | u_k)``, a mixture of the guide at
    ``num_pseudo_inputs`` learned pseudo-inputs ``u_k`` with learned weights ``w = softmax(.)`` (uniform at the
    start; ``learned_weights=False`` keeps them uniform, as in the paper).

    The prior reads the encoder and guide family through the VAE, which attaches its ``posterior`` and the data
    dimension (:meth:`attach`) when it is built. The pseudo-inputs are held on the scale the encoder reads, ``[0, 1]``
    (for 8-bit data ``u_k = data_scale * a_k``, so that an optimizer step moves them as far as it moves them for
    binarized data), as raw parameters ``a_k`` with ``u_k = activation(a_k)``: ``activation="none"`` leaves them
    unbounded, ``"hardtanh"`` clips them to ``[0, 1]`` as the reference code does (``Hardtanh(0, 1)`` on a linear
    layer applied to the identity matrix, so a raw value outside ``[0, 1]`` gets no gradient).

    The raw parameters start from ``N(init_mean, init_std^2)`` (``init="normal"``, the default: the reference code's,
    with its 0.05 and 0.01 for MNIST, nearly blank images, so the prior starts as one Gaussian), uniform over
    ``[0, 1]`` (``init="uniform"``) or, with ``init="data"``, as randomly chosen training examples (the reference
    code's ``use_training_data_init``), which :meth:`initialize_from_data` sets from the training split and seed.
    Pseudo-inputs that start diverse (``"uniform"``, ``"data"``) can let the posterior collapse early in training
    (the comparison of starts is in ``BENCHMARKS.md``, under the VampPrior on Fashion-MNIST).

    References:
        J. M. Tomczak, M. Welling. VAE with a VampPrior. AISTATS 2018 (code: github.com/jmtomczak/vae_vampprior).
    """

    needs_posterior = True

    def __init__(
        self,
        latent_dim: int,
        num_pseudo_inputs: int = 500,
        learned_weights: bool = True,
        init="normal",
        activation="none",
        init_mean: float = 0.05,
        init_std: float = 0.01,
    ):
        super().__init__()
        if num_pseudo_inputs < 1:
            raise ValueError(f"num_pseudo_inputs must be a positive integer, got {num_pseudo_inputs}")
        if init not in ("uniform", "normal", "data"):
            raise ValueError(
                f"init must be 'uniform', 'normal' (N(init_mean, init_std^2)) or 'data' (random training examples), "
                f"got {init!r}"
            )
        if activation not in ("none", "hardtanh"):
            raise ValueError(f"activation must be 'none' or 'hardtanh' (clipped to [0, 1]), got {activation!r}")
        if init_std < 0:
            raise ValueError(f"init_std must be non-negative, got {init_std}")
        self.init = init
        self.activation = activation
        self.init_mean = init_mean
        self.init_std = init_std
        self.latent_dim = latent_dim
        self.num_pseudo_inputs = num_pseudo_inputs
        self.logits = nn.Parameter(torch.zeros(num_pseudo_inputs), requires_grad=learned_weights)
        self.pseudo_inputs = None
        self.data_scale = 1.0
        self._posterior = None

    def attach(self, posterior, data_dim: int, data_scale: float = 1.0):
        """Give the prior the guide ``posterior(x) -> q(z | x)`` and the data dimension of its pseudo-inputs, and
        the range ``[0, data_scale]`` of the data that ``posterior`` reads (255 for 8-bit data)."""
        object.__setattr__(self, "_posterior", posterior)  # a reference, not a submodule: no second copy
        self.data_scale = data_scale
        shape = (self.num_pseudo_inputs, data_dim)
        if self.init == "normal":
            raw = self.init_mean + self.init_std * torch.randn(shape)
        else:  # uniform; "data" overwrites them in initialize_from_data
            raw = torch.rand(shape)
        self.pseudo_inputs = nn.Parameter(raw)

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """With ``init="data"``, set the pseudo-inputs to ``num_pseudo_inputs`` distinct random rows of ``x``
        (data on ``[0, data_scale]``)."""
        if self.init != "data":
            return
        if len(x) < self.num_pseudo_inputs:
            raise ValueError(f"init='data' needs {self.num_pseudo_inputs} training examples, got {len(x)}")
        chosen = torch.randperm(len(x), generator=generator)[: self.num_pseudo_inputs]
        self.pseudo_inputs.copy_(x[chosen].to(self.pseudo_inputs) / self.data_scale)

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs ``u_k`` on the data's scale ``[0, data_scale]``, as the guide reads them."""
        u = self.pseudo_inputs
        if self.activation == "hardtanh":
            u = F.hardtanh(u, 0.0, 1.0)
        return u * self.data_scale if self.data_scale != 1.0 else u

    def forward(self) -> dist.Distribution:
        if self._posterior is None:
            raise RuntimeError("the VampPrior needs the guide: build it inside a VAE (build_vae / build_model)")
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), self._posterior(self.inputs()))


@PRIORS.register("flow")
class FlowPrior(Prior):
    """A normalizing-flow prior: ``N(0, I)`` pushed through ``num_flows`` affine autoregressive transforms
    (``pyro.distributions.transforms.affine_autoregressive``, Papamakarios et al. 2017) with ``hidden_dims``."""

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden_dims=(64,)):
        super().__init__()
        from pyro.distributions.transforms import affine_autoregressive

        if num_flows < 1:
            raise ValueError(f"num_flows must be a positive integer, got {num_flows}")
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.flows = nn.ModuleList(
            affine_autoregressive(latent_dim, hidden_dims=list(hidden_dims)) for _ in range(num_flows)
        )

    def forward(self) -> dist.Distribution:
        base = dist.Normal(self.loc, 1.0).to_event(1)
        return dist.TransformedDistribution(base, list(self.flows))
