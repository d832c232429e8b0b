"""Refusals that change nothing and advise a command that then works; run folders that run no code (issue 23).

Each refused command is checked to leave every file of its folder as it was, and the fix its message suggests is
run to show that it works.
"""

import hashlib
import json
import os
import shutil

import pytest

from pyro_vae.cli.main import main
from tests.conftest import require_fashion_mnist, require_module
from tests.pyro_vae.test_folder import TINY, finished  # noqa: F401 (its module-scoped two-epoch run, here too)


@pytest.fixture
def run(request, tmp_path):
    """A copy of a finished two-epoch run, for one test to change."""
    return str(shutil.copytree(request.getfixturevalue("finished"), tmp_path / "run"))


def folder_files(folder) -> dict:
    """``{relative path: sha256}`` of every file under ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return files


def refused(argv, capsys) -> str:
    """The one-line error of a command that must be refused with exit status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_run_folder_runs_no_plugin_the_command_line_does_not_name(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    plugin = tmp_path / "planted.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\n")
    config_path = os.path.join(run, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["plugins"] = [str(plugin)]
    with open(config_path, "w") as f:
        json.dump(config, f)
    before = folder_files(run)
    for command in (["evaluate", run, "--num-samples", "5", "--no-progress"], ["sample", run, "--num-samples", "4"]):
        err = refused(command, capsys)
        assert f"needs the plugin '{plugin}'" in err and f"add --plugin {plugin}" in err
        assert not marker.exists() and folder_files(run) == before
    err = refused(["train", "--resume", "--out", run, "--no-progress"], capsys)
    assert f"add --plugin {plugin}" in err and not marker.exists() and folder_files(run) == before
    assert main(["sample", run, "--num-samples", "4", "--plugin", str(plugin)]) == 0  # the advice works
    assert marker.exists() and os.path.exists(os.path.join(run, "samples.png"))


def test_a_run_that_needs_a_missing_plugin_file_says_which(run, tmp_path, capsys):
    config_path = os.path.join(run, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    gone = str(tmp_path / "gone.py")
    config["plugins"] = [gone]
    with open(config_path, "w") as f:
        json.dump(config, f)
    err = refused(["evaluate", run, "--num-samples", "5"], capsys)
    assert f"needs the plugin file '{gone}'" in err and "which is not there" in err and f"--plugin {gone}" in err


def test_a_resume_refused_for_a_damaged_checkpoint_changes_no_file(run, capsys):
    checkpoint = os.path.join(run, "checkpoint.pt")
    with open(checkpoint, "rb") as f:
        intact = f.read()
    with open(checkpoint, "wb") as f:
        f.write(intact[: len(intact) // 2])
    before = folder_files(run)
    err = refused(["train", "--resume", "--out", run, "--epochs", "3", "--no-progress"], capsys)
    assert "is truncated or damaged" in err and "Restore the file from a copy" in err
    assert folder_files(run) == before
    with open(checkpoint, "wb") as f:  # the advice: restore it
        f.write(intact)
    assert main(["evaluate", run, "--num-samples", "5", "--posterior-examples", "--no-progress"]) == 0
    assert main(["train", "--resume", "--out", run, "--epochs", "3", "--no-progress"]) == 0
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["train"]["epochs"] == 3


def test_a_resume_to_fewer_epochs_than_done_is_refused(run, capsys):
    before = folder_files(run)
    err = refused(["train", "--resume", "--out", run, "--epochs", "1", "--no-progress"], capsys)
    assert "has trained 2 epochs" in err and "resume with --epochs 2 (as it is) or more" in err
    assert folder_files(run) == before
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--no-progress"]) == 0  # the advice works
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["train"]["epochs"] == 2


def test_resuming_a_folder_that_holds_no_run_is_refused(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("the user's own file\n")
    before = folder_files(folder)
    err = refused(["train", "--resume", "--out", str(folder), *TINY], capsys)
    assert "holds no run to resume" in err and "drop --resume" in err
    assert folder_files(folder) == before
    assert main(["train", "--out", str(folder), *TINY]) == 0  # the advice: the same command without --resume
    assert os.path.exists(folder / "checkpoint.pt") and (folder / "mine.txt").read_text() == "the user's own file\n"


def test_resuming_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    """Before: a mistyped --out with --resume trained a new run there and exited 0."""
    folder = tmp_path / "runs" / "digts"
    err = refused(["train", "--resume", "--out", str(folder), *TINY], capsys)
    assert "does not exist, so there is no run to resume" in err and "drop --resume" in err
    assert not os.path.exists(tmp_path / "runs")
    assert main(["train", "--out", str(folder), *TINY]) == 0  # the advice works
    assert os.path.exists(folder / "checkpoint.pt")


def test_resuming_an_empty_folder_or_a_file_is_refused(tmp_path, capsys):
    """Before: --resume into an existing empty folder trained a new default run there, and a file given as --out
    gave '[Errno 17] File exists'. A run killed before it wrote anything leaves its lock file, so it still resumes
    (test_distributed_runs and test_folder kill runs early)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    err = refused(["train", "--resume", "--out", str(empty), *TINY], capsys)
    assert "holds no run to resume" in err and "drop --resume" in err and os.listdir(empty) == []
    assert main(["train", "--out", str(empty), *TINY]) == 0  # the advice works
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for resume in ([], ["--resume"]):
        err = refused(["train", *resume, "--out", str(a_file), *TINY], capsys)
        assert "is a file, not a run folder" in err and a_file.read_text() == "mine"


SMALL_GRID = ["--dataset", "digits", "--num-train", "100", "--num-val", "20", "--num-test", "20", "--epochs", "1"]
SMALL_GRID += ["--hidden-sizes", "8", "--latent-dim", "2", "--no-progress"]


def suggested_option(err) -> list:
    import shlex

    return shlex.split(err.split("give it once instead: ")[1])


def test_compare_refuses_a_path_varied_twice_and_its_advice_works(tmp_path, capsys):
    out = tmp_path / "cmp"
    command = ["compare", *SMALL_GRID, "--num-samples", "5", "--no-pictures", "--out", str(out)]
    twice = ["--vary", "train.estimator=elbo", "--vary", "train.estimator=iwae,elbo"]
    err = refused([*command, *twice], capsys)
    assert "--vary names 'train.estimator' 2 times" in err and not out.exists()
    assert suggested_option(err) == ["--vary", 'train.estimator=["elbo", "iwae"]']
    assert main([*command, *suggested_option(err)]) == 0
    with open(out / "grid.json") as f:
        assert json.load(f)["axes"] == {"train.estimator": ["elbo", "iwae"]}


def test_search_refuses_a_path_searched_twice_and_its_advice_works(tmp_path, capsys):
    require_module("optuna", "pip install -e '.[search]'")
    out = tmp_path / "search"
    command = ["search", *SMALL_GRID, "--trials", "1", "--out", str(out)]
    twice = ["--space", "model.latent_dim=int(2,3)", "--space", "model.latent_dim=choice(2,4)"]
    err = refused([*command, *twice], capsys)
    assert "--space names 'model.latent_dim' 2 times" in err and not out.exists()
    assert suggested_option(err) == ["--space", "model.latent_dim=choice(2,4)"]
    assert main([*command, *suggested_option(err)]) == 0


@pytest.mark.parametrize("name", ["config.json", "status.json"])
def test_a_damaged_json_file_of_a_run_is_named(run, capsys, name):
    path = os.path.join(run, name)
    with open(path) as f:
        intact = f.read()
    with open(path, "w") as f:
        f.write(intact[: len(intact) // 2])
    before = folder_files(run)
    evaluate = ["evaluate", run, "--num-samples", "5", "--posterior-examples", "--no-progress"]
    err = refused(evaluate, capsys)
    assert f"'{path}' is damaged: it is not valid JSON" in err and "restore it from a copy" in err
    assert folder_files(run) == before
    with open(path, "w") as f:  # the advice: restore it
        f.write(intact)
    assert main(evaluate) == 0


def test_search_refuses_a_storage_it_cannot_open_and_leaves_no_folder(tmp_path, capsys):
    require_module("optuna", "pip install -e '.[search]'")
    out = tmp_path / "search"
    command = ["search", *SMALL_GRID, "--trials", "1", "--space", "model.latent_dim=int(2,3)", "--out", str(out)]
    for storage in ("ftp://host/db", "notaurl"):
        err = refused([*command, "--storage", storage], capsys)
        assert f"--storage '{storage}' cannot be opened" in err and "sqlite:///PATH/study.db" in err
        assert not out.exists()
    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # the advice: an RDB URL
    assert main([*command, "--storage", shared]) == 0 and (tmp_path / "shared.db").exists()


def test_sample_warns_on_an_unfinished_run_and_its_advice_finishes_it(run, capsys):
    from pyro_vae.folder import write_status

    write_status(run, state="failed", epochs=3)  # stopped after 2 of 3 epochs
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    config["train"]["epochs"] = 3
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(config, f)
    assert main(["sample", run, "--num-samples", "4"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "is not a finished run (status 'failed', 2 of 3 epochs done)" in err
    assert main(["train", "--resume", "--out", run, "--no-progress"]) == 0  # the advice
    assert main(["sample", run, "--num-samples", "4"]) == 0 and "warning" not in capsys.readouterr().err


def suggested_pairings(err) -> list:
    """The two option lists a mismatched prior and guide's refusal suggests: a guide of the prior's kind, a prior of
    the guide's kind."""
    import re
    import shlex

    return [shlex.split(option) for option in re.findall(r"(?:use|or) (--.+?) \(a (?:guide|prior) of", err)]


@pytest.mark.parametrize(
    "given",
    [
        ["--prior", "concrete", "--guide", "concrete"],
        ["--estimator", "iwae-dreg", "--num-particles", "2", "--guide", "bernoulli"],  # K = 1 would add a warning
    ],
    ids=["concrete-pair", "dreg-bernoulli"],
)
def test_a_mismatched_prior_and_guide_is_refused_with_pairings_that_train(tmp_path, capsys, given):
    out = tmp_path / "run"
    command = ["train", *SMALL_GRID, "--out", str(out)]
    err = refused([*command, *given], capsys)
    assert "would compare densities on different spaces" in err and not out.exists()
    fixes = suggested_pairings(err)
    assert len(fixes) == 2 and all(fix != given[-2:] for fix in fixes), err  # not the very options given
    for i, fix in enumerate(fixes):
        argv = [*command[:-1], str(tmp_path / f"fix{i}"), *given, *fix]  # a later option overrides the given one
        status = main(argv)
        if status == 2 and "iwae-dreg" in given:  # a reparameterized gradient cannot take binary samples
            assert "'vimco'" in capsys.readouterr().err  # the estimator's refusal names one that can
            status = main([*argv, "--estimator", "vimco"])
        assert status == 0, capsys.readouterr().err


def test_an_importance_weighted_bound_of_one_particle_is_called_the_elbo_and_the_advice_sets_k(tmp_path, capsys):
    command = ["train", *SMALL_GRID, "--estimator", "iwae"]
    assert main([*command, "--out", str(tmp_path / "k1")]) == 0
    err = capsys.readouterr().err
    assert "warning: --estimator iwae with one particle (K = 1, the default)" in err and "which is the ELBO" in err
    assert main([*command, "--num-particles", "5", "--out", str(tmp_path / "k5")]) == 0  # the advice
    assert "warning" not in capsys.readouterr().err
    compare = ["compare", *SMALL_GRID, "--num-samples", "5", "--no-pictures", "--vary", "train.estimator=elbo,iwae"]
    assert main([*compare, "--out", str(tmp_path / "cmp1")]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: cell 'estimator=iwae': --estimator iwae with one particle" in err
        and "cell 'estimator=elbo'" not in err
    )
    assert "give --vary train.estimator.options.num_particles=K" in err
    k = ["--vary", "train.estimator.options.num_particles=5"]  # the advice
    assert main([*compare, *k, "--out", str(tmp_path / "cmp5")]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_eight_bit_levels_with_a_bernoulli_likelihood_are_refused_with_fixes_that_train(tmp_path, capsys, dtype):
    import numpy as np

    levels = np.random.default_rng(0).integers(0, 256, size=(200, 16)).astype(dtype)
    np.save(tmp_path / "levels.npy", levels)
    flags = ["--epochs", "1", "--hidden-sizes", "8", "--latent-dim", "2", "--no-progress"]
    command = ["train", "--dataset", str(tmp_path / "levels.npy"), *flags]
    err = refused([*command, "--out", str(tmp_path / "refused")], capsys)
    assert "holds 8-bit levels 0..255" in err and "is real-valued" not in err and not (tmp_path / "refused").exists()
    for i, likelihood in enumerate(["discretized-logistic", "categorical-256"]):  # the advice: an 8-bit likelihood
        assert f"--likelihood {likelihood}" in err or likelihood in err
        assert main([*command, "--likelihood", likelihood, "--out", str(tmp_path / f"fix{i}")]) == 0
    assert "save the data divided by 255" in err  # or scaled to [0, 1], for the default likelihood
    np.save(tmp_path / "scaled.npy", levels / 255)
    assert main(["train", "--dataset", str(tmp_path / "scaled.npy"), *flags, "--out", str(tmp_path / "fix2")]) == 0


def test_an_empty_data_root_is_said_to_lack_the_files_and_its_fixes_train(tmp_path, capsys):
    from pyro_vae.data import FASHION_MNIST_SYSTEM_FOLDERS
    from pyro_vae.data.datasets import find_idx_image_files

    require_fashion_mnist()
    installed = find_idx_image_files(FASHION_MNIST_SYSTEM_FOLDERS)
    root = tmp_path / "empty"
    root.mkdir()
    command = ["train", "--dataset", "fashion-mnist", *TINY[:-1]]
    err = refused([*command, "--data-root", str(root), "--out", str(tmp_path / "refused")], capsys)
    assert f"the folder '{root}' (--data-root) lacks the files" in err and "train-images-idx3-ubyte[.gz]" in err
    assert "apt-get" not in err and not (tmp_path / "refused").exists()
    assert "drop --data-root" in err and main([*command, "--out", str(tmp_path / "installed")]) == 0
    assert f"put them in {root / 'FashionMNIST' / 'raw'} or in {root} itself" in err
    for path in installed.values():
        shutil.copy(path, root)
    assert main([*command, "--data-root", str(root), "--out", str(tmp_path / "copied")]) == 0


def checkpoint_stamp(run_dir) -> tuple:
    """The checkpoint's modification time and the checksum ``status.json`` records for it."""
    with open(os.path.join(run_dir, "status.json")) as f:
        return os.stat(os.path.join(run_dir, "checkpoint.pt")).st_mtime_ns, json.load(f)["checkpoint"]["sha256"]


def files_under(files: dict, prefix: str) -> dict:
    """The entries of :func:`folder_files` under the subfolder ``prefix``, relative to it."""
    return {name[len(prefix) :]: sha for name, sha in files.items() if name.startswith(prefix)}


COMPARE = ["compare", *SMALL_GRID, "--num-samples", "5", "--no-pictures"]


def test_a_comparison_with_a_cell_its_settings_fail_advises_update_which_keeps_the_finished_runs(tmp_path, capsys):
    failing = ["--vary", "model.guide=diagonal-normal,bernoulli"]
    out = tmp_path / "cmp"
    assert main([*COMPARE, *failing, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 of 2 runs failed" in err and "change or drop the failing values in --vary" in err
    assert "rerun with --update: finished runs are kept" in err and "another --out" not in err
    assert main([*COMPARE, *failing, "--out", str(out)]) == 2  # why: the same command fails the same way
    capsys.readouterr()
    kept = out / "cells" / "guide-diagonal-normal" / "seed-0"
    stamp = checkpoint_stamp(kept)
    changed = ["--vary", "model.guide=diagonal-normal,low-rank-normal", "--update"]  # the advice
    assert main([*COMPARE, *changed, "--out", str(out)]) == 0
    assert checkpoint_stamp(kept) == stamp, "the finished run was trained again"
    with open(out / "results.json") as f:
        results = json.load(f)
    cells = [(r["cell"], r["state"]) for r in results["runs"]]
    assert cells == [("guide=diagonal-normal", "done"), ("guide=low-rank-normal", "done")]
    assert results["grid"]["axes"] == {"model.guide": ["diagonal-normal", "low-rank-normal"]}
    with open(out / "grid.json") as f:
        assert json.load(f)["axes"] == {"model.guide": ["diagonal-normal", "low-rank-normal"]}


def test_a_changed_grid_is_refused_without_update_and_its_advice_keeps_the_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([*COMPARE, "--vary", "train.estimator=elbo,iwae", "--out", str(out)]) == 0
    capsys.readouterr()
    before = folder_files(out)
    changed = [*COMPARE, "--vary", "train.estimator=elbo,elbo-stl", "--out", str(out)]
    err = refused(changed, capsys)
    assert f"'{out}' holds another comparison" in err and "rerun with --update" in err
    assert folder_files(out) == before
    kept = out / "cells" / "estimator-elbo" / "seed-0"
    stamp = checkpoint_stamp(kept)
    assert main([*changed, "--update"]) == 0  # the advice
    assert checkpoint_stamp(kept) == stamp, "the finished run was trained again"
    left = out / "cells" / "estimator-iwae" / "seed-0"
    said = f"runs of an earlier grid that this one does not name stay on disk, outside the report: {left}\n"
    assert said in capsys.readouterr().out
    assert folder_files(left) == files_under(before, "cells/estimator-iwae/seed-0/")
    with open(out / "results.json") as f:
        assert [r["cell"] for r in json.load(f)["runs"]] == ["estimator=elbo", "estimator=elbo-stl"]


def test_update_refuses_a_run_folder_trained_with_other_settings_and_changes_no_file(tmp_path, capsys):
    out = tmp_path / "cmp"
    grid = [*COMPARE, "--vary", "train.estimator=elbo,iwae"]
    assert main([*grid, "--out", str(out)]) == 0
    capsys.readouterr()
    before = folder_files(out)
    err = refused([*grid, "--latent-dim", "3", "--update", "--out", str(out)], capsys)
    assert "(cell 'estimator=elbo', seed 0) was trained with other settings (model.latent_dim: 2 there, 3 here)" in err
    assert "(and 1 more runs)" in err and "another --out folder" in err
    assert folder_files(out) == before
    assert main([*grid, "--latent-dim", "3", "--out", str(tmp_path / "cmp3")]) == 0  # the advice: another folder


def test_update_with_more_epochs_continues_the_kept_runs_and_refuses_fewer(tmp_path, capsys):
    out = tmp_path / "cmp"
    grid = [*COMPARE, "--vary", "train.estimator=elbo,iwae", "--out", str(out)]
    assert main(grid) == 0
    with open(out / "cells" / "estimator-elbo" / "seed-0" / "metrics.json") as f:
        first_epoch = json.load(f)[0]
    assert main([*grid, "--epochs", "2", "--update"]) == 0
    capsys.readouterr()
    with open(out / "cells" / "estimator-elbo" / "seed-0" / "metrics.json") as f:
        metrics = json.load(f)
    assert len(metrics) == 2 and metrics[0] == first_epoch  # continued, not trained anew
    before = folder_files(out)
    err = refused([*grid, "--update"], capsys)  # back to one epoch
    assert "has trained 2 epochs, more than the 1 this grid asks for" in err
    assert folder_files(out) == before


def test_update_trains_afresh_a_run_folder_with_nothing_trained_whatever_settings_it_holds(tmp_path, capsys):
    out = tmp_path / "cmp"
    grid = [*COMPARE, "--vary", "train.estimator=elbo,iwae", "--out", str(out)]
    assert main(grid) == 0
    killed = out / "cells" / "estimator-iwae" / "seed-0"  # as a run of another grid killed in its first epoch
    os.remove(killed / "checkpoint.pt")
    os.remove(killed / "metrics.json")
    shutil.rmtree(killed / "eval")
    with open(killed / "config.json") as f:
        config = json.load(f)
    config["model"]["latent_dim"] = 3
    (killed / "config.json").write_text(json.dumps(config))
    (killed / "status.json").write_text(json.dumps({"state": "training", "epochs": 1}))
    assert main([*grid, "--baseline", "estimator=iwae", "--update"]) == 0  # another grid, the same runs
    with open(killed / "config.json") as f:
        assert json.load(f)["model"]["latent_dim"] == 2
    with open(out / "results.json") as f:
        assert [r["state"] for r in json.load(f)["runs"]] == ["done", "done"]
