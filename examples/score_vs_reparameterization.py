r"""Reparameterization against the score function on a toy problem, with the analytic answers beside them.

    python examples/score_vs_reparameterization.py               # writes docs/gallery/score_vs_reparameterization.png

Minimize :math:`E_{q_\theta}[f(x)]` with :math:`q_\theta = N(\theta, 1)`. Two unbiased estimators of its gradient
from draws :math:`x = \theta + \epsilon`, :math:`\epsilon \sim N(0, 1)`:

* score function (REINFORCE, Williams 1992): :math:`f(x) \nabla_\theta \log q_\theta(x) = f(x)(x - \theta)`,
* reparameterization (Kingma & Welling 2014): :math:`\nabla_\theta f(\theta + \epsilon) = f'(x)`.

For :math:`f(x) = x^2` both have mean :math:`2\theta`; their variances per draw are

.. math:: \operatorname{Var}_\text{score} = \theta^4 + 14\theta^2 + 15, \qquad \operatorname{Var}_\text{reparam} = 4,

so the reparameterized one wins everywhere, by far for large :math:`|\theta|`. It is not always so: for a rapidly
oscillating :math:`f(x) = \sin(\omega x)` the pathwise derivative :math:`\omega \cos(\omega x)` has variance of
order :math:`\omega^2 / 2` while the score-function estimate stays bounded by :math:`E[\epsilon^2] = 1`:

.. math:: \operatorname{Var}_\text{reparam} = \tfrac{\omega^2}{2}\bigl(1 + \cos(2\omega\theta) e^{-2\omega^2}\bigr)
    - m^2, \quad \operatorname{Var}_\text{score} = \tfrac12 - \tfrac12 \cos(2\omega\theta)(1 - 4\omega^2)
    e^{-2\omega^2} - m^2, \quad m = \omega \cos(\omega\theta) e^{-\omega^2/2}.

Both estimators are computed with autograd, as a VAE's estimators are: ``rsample`` and backpropagation through
``f``, or ``sample`` and the surrogate ``f(x).detach() * log_prob(x)`` (Schulman et al. 2015).
"""

import argparse
import math
import os

import torch

GALLERY = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "gallery")


def square(x):
    return x**2


def sine(omega):
    return lambda x: torch.sin(omega * x)


def gradient_draws(f, theta: float, num_draws: int, estimator: str, generator=None) -> torch.Tensor:
    """``num_draws`` single-draw gradient estimates of ``d/dtheta E_{N(theta, 1)}[f(x)]``."""
    loc = torch.full((num_draws,), float(theta), dtype=torch.float64, requires_grad=True)
    eps = torch.randn(num_draws, dtype=torch.float64, generator=generator)
    q = torch.distributions.Normal(loc, 1.0)
    if estimator == "reparameterization":
        surrogate = f(loc + eps)  # = q.rsample() with these draws
    elif estimator == "score":
        x = (loc + eps).detach()  # = q.sample()
        surrogate = f(x) * q.log_prob(x)
    else:
        raise ValueError(f"estimator must be 'reparameterization' or 'score', got {estimator!r}")
    (gradient,) = torch.autograd.grad(surrogate.sum(), loc)
    return gradient


def analytic_square(theta: float) -> dict:
    """Mean and per-draw variances of both estimators for ``f(x) = x^2``."""
    return {"mean": 2 * theta, "score": theta**4 + 14 * theta**2 + 15, "reparameterization": 4.0}


def analytic_sine(theta: float, omega: float) -> dict:
    """Mean and per-draw variances of both estimators for ``f(x) = sin(omega x)``."""
    mean = omega * math.cos(omega * theta) * math.exp(-(omega**2) / 2)
    damp = math.exp(-2 * omega**2)
    reparameterization = omega**2 / 2 * (1 + math.cos(2 * omega * theta) * damp) - mean**2
    score = 0.5 - 0.5 * math.cos(2 * omega * theta) * (1 - 4 * omega**2) * damp - mean**2
    return {"mean": mean, "score": score, "reparameterization": reparameterization}


def figure(path, num_draws=20000, seed=0, omega=2.0, theta_for_n=1.0):
    """Per problem (rows: x^2 and sin(omega x)): the estimators' means and per-draw variances against theta, and
    the variance of the average of N draws against N at ``theta_for_n`` (exact: variance per draw / N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generator = torch.Generator().manual_seed(seed)
    thetas = torch.linspace(-3, 3, 25).tolist()
    sizes = [1, 4, 16, 64, 256]
    styles = {"score": "tab:red", "reparameterization": "tab:blue"}
    problems = [
        (square, analytic_square, "f(x) = x²"),
        (sine(omega), lambda t: analytic_sine(t, omega), f"f(x) = sin({omega:g}x)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for row, (f, analytic, title) in enumerate(problems):
        for name, color in styles.items():
            draws = [gradient_draws(f, t, num_draws, name, generator) for t in thetas]
            axes[row, 0].plot(thetas, [d.mean().item() for d in draws], "o", ms=3, color=color, label=name)
            axes[row, 1].semilogy(thetas, [d.var().item() for d in draws], "o", ms=3, color=color, label=name)
            axes[row, 1].semilogy(thetas, [analytic(t)[name] for t in thetas], "-", color=color, lw=1)
            averages = [
                gradient_draws(f, theta_for_n, 2000 * n, name, generator).reshape(2000, n).mean(1).var().item()
                for n in sizes
            ]
            axes[row, 2].loglog(sizes, averages, "o", color=color, label=name)
            axes[row, 2].loglog(sizes, [analytic(theta_for_n)[name] / n for n in sizes], "-", color=color, lw=1)
        axes[row, 0].plot(thetas, [analytic(t)["mean"] for t in thetas], "k-", lw=1, label="exact gradient")
        axes[row, 0].set_title(f"{title}: mean of the estimates")
        axes[row, 1].set_title(f"{title}: variance per draw (lines: exact)")
        axes[row, 2].set_title(f"{title}: variance of an N-draw mean (θ = {theta_for_n:g})", fontsize=10)
        axes[row, 0].set_xlabel("θ")
        axes[row, 1].set_xlabel("θ")
        axes[row, 2].set_xlabel("N draws")
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(GALLERY, "score_vs_reparameterization.png"))
    parser.add_argument("--num-draws", type=int, default=20000)
    args = parser.parse_args()
    for theta in (0.0, 1.0, 3.0):
        exact = analytic_square(theta)
        print(
            f"x^2, theta={theta}: exact gradient {exact['mean']:.2f}; variance per draw: score "
            f"{exact['score']:.1f}, reparameterization {exact['reparameterization']:.1f}"
        )
    print(f"wrote {figure(args.out, args.num_draws)}")


if __name__ == "__main__":
    main()
