"""The README's examples run verbatim: each Python block in a fresh process, and its TOML block builds a run."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def blocks(language):
    with open(README) as f:
        return re.findall(rf"```{language}\n(.*?)```", f.read(), flags=re.S)


def test_the_readme_has_examples():
    assert len(blocks("python")) == 4 and len(blocks("toml")) == 1


@pytest.mark.parametrize("index", range(4))
def test_python_example_runs_verbatim(index, tmp_path):
    # A process of its own: an example that registers a component must not change this process's tables.
    result = subprocess.run(
        [sys.executable, "-c", blocks("python")[index]], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_toml_example_builds_a_checked_configuration(tmp_path):
    from pyro_vae.config import load_config_file

    path = tmp_path / "experiment.toml"
    path.write_text(blocks("toml")[0])
    config = load_config_file(path)
    assert config.model.prior.name == "bernoulli" and config.model.prior.options == {"learned": True}
    assert config.train.estimator.options == {"num_particles": 5}
    assert config.eval.method.options == {"num_samples": 5000}
    assert config.model.decoder.options["hidden_sizes"] == [200, 200]  # left out: the default
