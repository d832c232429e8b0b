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


def test_custom_components_work_from_python_config_and_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    report = load_example("custom_components").main(epochs=2, progress=False)
    assert report["elbo"] < report["log_px"] < 0 and report["data_representation"] == "continuous"
    plugin = os.path.join(EXAMPLES, "custom_components.py")
    out = str(tmp_path / "run")
    command = [sys.executable, "-m", "pyro_vae.cli"]
    train = ["train", "--plugin", plugin, "--prior", "wide-normal", "--prior-options", '{"scale": 3.0}']
    train += ["--likelihood", "cauchy", "--dataset", "linear-gaussian", "--num-train", "300", "--epochs", "1"]
    subprocess.run([*command, *train, "--no-progress", "--out", out], check=True, capture_output=True, cwd=tmp_path)
    evaluate = ["evaluate", out, "--num-samples", "20", "--posterior-examples", "--no-progress"]
    subprocess.run(
        [*command, *evaluate], check=True, capture_output=True, cwd=tmp_path
    )  # the plugin comes from config.json
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["plugins"] == [os.path.abspath(plugin)] and config["model"]["prior"]["options"] == {"scale": 3.0}
