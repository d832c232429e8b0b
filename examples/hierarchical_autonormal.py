"""A hierarchical linear-Gaussian model with Pyro's ``AutoNormal`` guide, trained under three estimators and judged
by importance sampling, annealed importance sampling and the exact log p(x).

    python examples/hierarchical_autonormal.py             # about 2 minutes on 2 CPU cores
    python examples/hierarchical_autonormal.py --quick     # a few seconds

Each data point is a *group* ``g`` (a school, a patient, a batch of a product) with ``n`` measurements::

    mu_g   ~ N(m, tau^2)                 group-level latent mean
    u_gi   ~ N(mu_g, s^2)                per-measurement latent true value,   i = 1..n
    x_gi   ~ N(u_gi, sigma^2)            the measurement, with known noise sigma

The hyperparameters ``m``, ``tau`` and ``s`` are learned (type-II maximum likelihood), and ``mu`` and ``u`` get a
mean-field ``AutoNormal`` guide, which cannot express the posterior's correlation between ``mu_g`` and the
``u_gi``. Integrating the latents out, ``x_g ~ N(m 1, tau^2 1 1^T + (s^2 + sigma^2) I)``, so the exact log p(x_g)
of the learned model is printed beside the estimates.

Two things differ from an amortized VAE:

* ``AutoNormal`` keeps one location and scale per latent *value*, so a held-out group needs its own guide. After
  training, a fresh ``AutoNormal`` is fitted to the test groups with the model frozen, by the same estimator, and
  ``is`` uses that guide. (``pyro.settings`` ``module_local_params`` keeps the two guides' parameters apart: in
  Pyro's global parameter store both would be named ``AutoNormal.locs.mu``.)
* ``ais`` anneals from a proposal through HMC in the latents' space; from an autoguide it is refused (its log q is
  a sum over auxiliary and ``Delta`` sites, not a density of the model's latents), so it runs with
  ``proposal="prior"``.
"""

import argparse
import contextlib
import math
import sys
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

import inference

# max_plate_nesting given, so the estimators need not run the model once more every step to guess it
ESTIMATORS = [
    ("elbo", {"max_plate_nesting": 2}),
    ("iwae", {"num_particles": 10, "max_plate_nesting": 2}),
    ("iwae-dreg", {"num_particles": 10, "max_plate_nesting": 2}),
]
NOISE = 0.5  # sigma, the known measurement noise


class GroupModel(PyroModule):
    """``mu_g ~ N(m, tau^2)``, ``u_gi ~ N(mu_g, s^2)``, ``x_gi ~ N(u_gi, sigma^2)``; groups are the data plate."""

    def __init__(self):
        super().__init__()
        self.m = PyroParam(torch.tensor(0.0))
        self.tau = PyroParam(torch.tensor(1.0), constraint=constraints.positive)
        self.s = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def forward(self, x):
        num_groups, size = x.shape
        with pyro.plate("data", num_groups, dim=-2):
            mu = pyro.sample("mu", dist.Normal(self.m, self.tau))
            with pyro.plate("measurements", size, dim=-1):
                u = pyro.sample("u", dist.Normal(mu, self.s))
                pyro.sample("x", dist.Normal(u, NOISE), obs=x)

    @torch.no_grad()
    def exact_log_px(self, x):
        """``log N(x_g; m 1, tau^2 1 1^T + (s^2 + sigma^2) I)`` per group."""
        size = x.shape[-1]
        cov = self.tau**2 * torch.ones(size, size) + (self.s**2 + NOISE**2) * torch.eye(size)
        return dist.MultivariateNormal(self.m.expand(size), covariance_matrix=cov).log_prob(x)


def simulate(num_groups, size, generator):
    """Groups from ``m = 1.5, tau = 2, s = 0.7`` (sigma = 0.5)."""
    mu = 1.5 + 2.0 * torch.randn(num_groups, 1, generator=generator)
    u = mu + 0.7 * torch.randn(num_groups, size, generator=generator)
    return u + NOISE * torch.randn(num_groups, size, generator=generator)


def fit(objective, model, guide, x, steps, lr, parameters):
    """Adam steps on ``parameters`` under the estimator's gradient; returns the final loss per group."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = objective.differentiable_loss(model, guide, x)
        loss.backward()
        optimizer.step()
    return loss.item() / x.shape[0]


def try_estimator(name, options, model, guide, x):
    """The estimator, or ``None`` with its refusal printed when it refuses this model/guide pair."""
    objective = inference.estimator(name, **options)
    try:
        objective.differentiable_loss(model, guide, x)
    except (ValueError, NotImplementedError) as error:
        print(f"  {name} refuses AutoNormal: {error}")
        return None
    return objective


@contextlib.contextmanager
def torch_threads(num_threads):
    """Run with ``num_threads`` torch threads, then restore the count. The tensors here are tiny: on 2 CPU cores
    shared with other work, two threads made an IWAE step and an AIS run about 10 times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and few steps (seconds)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see one_thread)")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        return run(args)


def run(args):
    if args.quick:
        sizes = dict(train=100, test=50, size=8, steps=300, test_steps=300, num_samples=1000, ais_steps=100)
    else:
        sizes = dict(train=500, test=200, size=8, steps=1500, test_steps=1000, num_samples=5000, ais_steps=500)
    generator = torch.Generator().manual_seed(args.seed)
    x_train = simulate(sizes["train"], sizes["size"], generator)
    x_test = simulate(sizes["test"], sizes["size"], generator)
    print(f"{sizes['train']} training and {sizes['test']} test groups of {sizes['size']} measurements")

    results = {}
    with pyro.settings.context(module_local_params=True):
        for name, options in ESTIMATORS:
            pyro.set_rng_seed(args.seed)
            model = GroupModel()
            guide = AutoNormal(model, init_scale=0.1)
            objective = try_estimator(name, options, model, guide, x_train)
            if objective is None:
                name, options = "iwae-stl", options
                print(f"  using {name} instead")
                objective = inference.estimator(name, **options)
            start = time.perf_counter()
            params = list(model.parameters()) + list(guide.parameters())
            train_loss = fit(objective, model, guide, x_train, sizes["steps"], 0.05, params)
            # The test groups get their own AutoNormal, fitted with the model's hyperparameters frozen.
            model.requires_grad_(False)
            test_guide = AutoNormal(model, init_scale=0.1)
            test_guide(x_test)  # creates its parameters
            fit(objective, model, test_guide, x_test, sizes["test_steps"], 0.05, list(test_guide.parameters()))
            seconds = time.perf_counter() - start
            exact = model.exact_log_px(x_test)
            # AutoNormal holds one parameter per test group, so the groups are estimated in one pass
            # (data_batch_size=None): a chunk of them would not match the guide's parameters.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", inference.UnreliableEstimateWarning)  # the table says it
                is_result = inference.log_marginal_likelihood(
                    model,
                    test_guide,
                    x_test,
                    method="is",
                    num_samples=sizes["num_samples"],
                    data_batch_size=None,
                    seed=args.seed,
                )
                ais_result = inference.log_marginal_likelihood(
                    model,
                    test_guide,
                    x_test,
                    method="ais",
                    proposal="prior",
                    num_steps=sizes["ais_steps"],
                    num_chains=16,
                    data_batch_size=None,
                    seed=args.seed,
                )
            results[name] = {
                "train_loss": train_loss,
                "exact": exact.mean().item(),
                "exact_per_group": exact,
                "is": is_result,
                "ais": ais_result,
                "seconds": seconds,
                "hyperparameters": {k: getattr(model, k).item() for k in ("m", "tau", "s")},
            }

    refusal = None
    with pyro.settings.context(module_local_params=True):
        model = GroupModel()
        guide = AutoNormal(model)
        guide(x_test)
        try:
            inference.log_marginal_likelihood(model, guide, x_test[:5], method="ais", num_steps=5, num_chains=2)
        except (ValueError, NotImplementedError) as error:
            refusal = str(error)
    print(f"\nAIS from the AutoNormal guide is refused: {refusal}")

    print("\nTest log p(x) per group (nats; +- standard error over groups); AIS from the prior, 16 chains")
    header = f"{'estimator':<10} {'m':>6} {'tau':>6} {'s':>6} {'exact':>9} {'IS':>16} {'IS - exact':>11} "
    header += f"{'AIS':>9} {'AIS - exact':>12} {'ELBO':>9} {'IS reliable':>12} {'s':>6}"
    print(header)
    for name, r in results.items():
        h = r["hyperparameters"]
        print(
            f"{name:<10} {h['m']:>6.2f} {h['tau']:>6.2f} {h['s']:>6.2f} {r['exact']:>9.3f} "
            f"{r['is'].mean:>9.3f} +-{r['is'].stderr:.2f} {r['is'].mean - r['exact']:>11.4f} "
            f"{r['ais'].mean:>9.3f} {r['ais'].mean - r['exact']:>12.4f} {r['is'].elbo_mean:>9.3f} "
            f"{str(r['is'].mc_stderr_reliable):>12} {r['seconds']:>6.1f}"
        )
    print("(true m = 1.50, tau = 2.00, s = 0.70; 's' last: seconds to train and fit the test guide)")
    for name, r in results.items():
        for value in (r["exact"], r["is"].mean, r["ais"].mean):
            if not math.isfinite(value):
                raise RuntimeError(f"{name}: a non-finite log p(x)")
    results["ais_refusal"] = refusal
    return results


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # exit non-zero with the reason on one line
        print(f"hierarchical_autonormal failed: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
