"""``pyro-vae evaluate``: held-out log p(x) of a run folder by a method of ``LOG_PX_METHODS``
(:func:`pyro_vae.runs.evaluate_run`).
"""

import json
import os
import sys

from pyro_vae.cli.options import PLUGIN_HELP, add_nproc, dest, json_object

#: Flags of `evaluate` that set an option of the log p(x) method.
METHOD_ALIASES = [
    ("--num-samples", int, "importance samples K per example (is, is-prior, exact; default 5000)"),
    (
        "--particle-batch-size",
        int,
        "particles per vectorized pass, which bounds memory (default: 8192 draws per pass on CPU, 2048 where "
        "MALLOC_* or GLIBC_TUNABLES is set; on a GPU 200,000, or fewer where a quarter of its free memory holds "
        "fewer)",
    ),
    ("--ais-steps", int, "AIS: intermediate distributions (transitions)", "num_steps"),
    ("--ais-chains", int, "AIS: independent chains per example", "num_chains"),
    ("--ais-leapfrog-steps", int, "AIS: leapfrog steps per HMC transition", "num_leapfrog_steps"),
    ("--ais-step-size", float, "AIS: initial HMC step size (adapted)", "step_size"),
    ("--ais-target-accept", float, "AIS: acceptance rate the step size adapts to", "target_accept"),
    ("--ais-schedule", str, "AIS: inverse temperatures, sigmoid or linear", "schedule"),
    ("--ais-proposal", str, "AIS: where the chains start, guide (q(z|x)) or prior (p(z))", "proposal"),
]


def add_parser(sub):
    p = sub.add_parser(
        "evaluate",
        help="estimate held-out log p(x) of a trained run",
        description="Estimate log p(x) of every example of a split of a trained run (importance sampling, AIS or "
        "exact), with the ELBO from the same draws, KL(q(z|x) || p(z)) per latent dimension and the active units. "
        "Writes eval/METHOD-SPLIT.json (summary, with the data, training and evaluation seeds and the checkpoint it "
        "scored) and eval/METHOD-SPLIT.nc (per-example "
        "estimates, ESS, Pareto k-hat and posterior draws, for arviz) into the run folder, and prints the summary. "
        "Options left out take the run's eval section of config.json, whose defaults are importance sampling with "
        "K = 5000 on the test split.",
    )
    p.add_argument("run_dir", help="run folder written by `pyro-vae train`")
    p.add_argument(
        "--method",
        help="is (guide as proposal), is-prior (prior as proposal), ais (annealed "
        "importance sampling with HMC), exact (where the model allows it), or one that a --plugin registers",
    )
    p.add_argument("--method-options", type=json_object, default={}, help="options of the method as JSON")
    for flag, kind, help_text, *_ in METHOD_ALIASES:
        p.add_argument(flag, type=kind, default=None, help=help_text)
    p.add_argument("--split", choices=["train", "val", "test"], help="which split to evaluate")
    p.add_argument("--data-batch-size", type=int, help="examples per pass (memory)")
    p.add_argument("--num-examples", type=int, help="evaluate only the first N examples of the split")
    p.add_argument("--seed", type=int, help="seed for the importance samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--posterior-examples",
        type=int,
        nargs="*",
        default=[0, 1, 2, 3],
        help="indices of examples whose resampled posterior draws of z are stored in the .nc file",
    )
    p.add_argument("--num-posterior-draws", type=int, default=200, help="posterior draws per chosen example")
    p.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="evaluate the last checkpoint of a run whose training has not finished",
    )
    p.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    add_nproc(p, "share the examples out among N processes of this machine (the estimates do not change)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(run=run)


def run(args):
    from pyro_vae import runs
    from pyro_vae.folder import json_safe

    options = dict(args.method_options)
    for flag, _, _, *option in METHOD_ALIASES:
        value = getattr(args, dest(flag))
        if value is not None:
            options[option[0] if option else dest(flag)] = value
    report = runs.evaluate_run(
        args.run_dir,
        method=args.method,
        method_options=options,
        split=args.split,
        data_batch_size=args.data_batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        posterior_examples=args.posterior_examples,
        num_posterior_draws=args.num_posterior_draws,
        allow_unfinished=args.allow_unfinished,
        num_examples=args.num_examples,
    )
    if "warnings" not in report:  # a rank other than 0 of a process group: rank 0 reports
        return
    print(json.dumps(json_safe(report), indent=2))
    for warning in report["warnings"]:
        print(f"pyro-vae evaluate: warning: {warning}", file=sys.stderr)
    from inference import LOG_PX_METHODS

    draws = LOG_PX_METHODS.get(report["method"]).draws_name
    print(
        f"log p(x) ~ {report['log_px']:.3f} +- {report['log_px_stderr']:.3f} ({report['method']}, "
        f"{report['num_samples']} {draws} per example), ELBO {report['elbo']:.3f}, gap {report['gap']:.3f} nats "
        f"per example on {report['num_examples']} {report['split']} examples; {report['active_units']} active "
        f"units; per-example results in {os.path.join(args.run_dir, report['inference_data'])}"
    )
