import importlib.util
import os

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_model_estimates_match_exact_log_px():
    results = load_example("custom_model").main(steps=150, num_data=500, verbose=False)
    for name, (exact, estimate) in results.items():
        # The importance-sampled estimate of a learned model lies within 5 Monte Carlo standard errors (plus the
        # O(1/K) bias of the log) of that model's exact log p(x), and above its ELBO.
        assert abs(estimate.mean - exact) < 5 * estimate.mc_stderr_of_mean + 0.01, name
        assert estimate.elbo_mean < estimate.mean, name
