"""Data larger than memory (issue 27): ``data.memory_map`` reads a ``.npy`` (or an uncompressed ``.npz``) from
disk a batch at a time, with the numbers of the in-memory path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae.cli.main import main
from pyro_vae.data.datasets import batches, fixed_binarization, fixed_dequantization, load_dataset
from pyro_vae.data.mapped import MappedRows, is_lazy
from pyro_vae.data.splits import DataError

SPLITS = ("train", "val", "test")


def _both(path, **kwargs):
    return load_dataset(str(path), memory_map=False, **kwargs), load_dataset(str(path), memory_map=True, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int64"])
def test_mapped_splits_hold_the_in_memory_rows(tmp_path, dtype):
    rng = np.random.default_rng(0)
    values = rng.random((203, 5, 4)) if dtype.startswith("float") else rng.integers(0, 256, (203, 5, 4))
    np.save(tmp_path / "x.npy", values.astype(dtype))
    memory, mapped = _both(tmp_path / "x.npy", seed=3)
    assert all(is_lazy(getattr(mapped, split)) for split in SPLITS)
    for field in ("image_shape", "binary_ok", "eight_bit", "split_source"):
        assert getattr(mapped, field) == getattr(memory, field), field
    for split in SPLITS:
        rows = getattr(mapped, split)
        assert rows.shape == getattr(memory, split).shape
        assert torch.equal(rows[0 : len(rows)], getattr(memory, split)), split
        index = torch.tensor([7, 2, 2, 0])
        assert torch.equal(rows[index], getattr(memory, split)[index])


def test_an_uncompressed_npz_with_its_own_splits_is_mapped_and_a_compressed_one_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"train": rng.random((50, 6)), "valid": rng.random((10, 6)), "test": rng.random((12, 6))}
    np.savez(tmp_path / "own.npz", **arrays, y=np.arange(50))
    memory, mapped = _both(tmp_path / "own.npz")
    assert mapped.split_source == "file" and isinstance(mapped.val, MappedRows)
    for split in SPLITS:
        assert torch.equal(getattr(mapped, split)[:], getattr(memory, split))
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    with pytest.raises(
        DataError, match="array 'train' compressed.*numpy.savez \\(uncompressed\\), or drop data.memory_map"
    ):
        load_dataset(str(tmp_path / "packed.npz"), memory_map=True)
    assert not is_lazy(load_dataset(str(tmp_path / "packed.npz")).train)  # by default: read whole


def test_fixed_draws_of_mapped_rows_equal_the_whole_split_draws_in_any_order(tmp_path):
    """Evaluation binarizes (or dequantizes) a split once by a seed; read a slice at a time, in any order, the
    mapped split gives the rows of that one draw."""
    np.save(tmp_path / "x.npy", np.random.default_rng(2).random((9000, 7)).astype(np.float32))
    memory, mapped = _both(tmp_path / "x.npy")
    whole, drawn = fixed_binarization(memory.train, seed=11), fixed_binarization(mapped.train, seed=11)
    for start, stop in [(5000, 5003), (17, 4200), (0, 10), (7190, 7200), (4200, 7200)]:
        assert torch.equal(drawn[start:stop], whole[start:stop]), (start, stop)
    assert torch.equal(drawn[[9, 3, 7000]], whole[[9, 3, 7000]])
    levels = (memory.test * 255).round()
    mapped_levels = mapped.test.transformed(lambda x: (x * 255).round())
    assert torch.equal(
        fixed_dequantization(mapped_levels, seed=4)[100:300], fixed_dequantization(levels, seed=4)[100:300]
    )


def test_training_batches_of_mapped_rows_are_the_in_memory_batches(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).random((301, 8)).astype(np.float32))
    memory, mapped = _both(tmp_path / "x.npy")
    streams = [
        list(batches(s.train, 32, shuffle=True, generator=torch.Generator().manual_seed(5), dynamic_binarization=True))
        for s in (memory, mapped)
    ]
    assert len(streams[0]) == len(streams[1]) == 8
    for (a,), (b,) in zip(*streams):
        assert torch.equal(a, b)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_run_on_a_mapped_file_gives_the_numbers_of_the_in_memory_run(tmp_path, likelihood):
    np.save(tmp_path / "x.npy", np.random.default_rng(4).random((400, 12)).astype(np.float32))
    reports = []
    for memory_map in ("false", "true"):
        out = str(tmp_path / memory_map)
        train = ["train", "--dataset", str(tmp_path / "x.npy"), "--epochs", "2", "--batch-size", "40"]
        train += ["--hidden-sizes", "16", "--latent-dim", "3", "--likelihood", likelihood, "--no-progress"]
        assert main([*train, "--out", out, "--set", f"data.memory_map={memory_map}"]) == 0
        assert main(["evaluate", out, "--num-samples", "30", "--data-batch-size", "16", "--no-progress"]) == 0
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in json.load(f)]
        with open(os.path.join(out, "eval", "is-test.json")) as f:
            report = {k: v for k, v in json.load(f).items() if k not in ("seconds", "checkpoint")}
        module = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["module"]
        reports.append((metrics, report, module))
    (metrics, report, module), (mapped_metrics, mapped_report, mapped_module) = reports
    assert mapped_metrics == metrics
    assert mapped_report == report
    assert all(torch.equal(module[k], mapped_module[k]) for k in module)


PEAK_RSS = """
import sys
from pyro_vae.cli.main import main
assert main(sys.argv[1:]) == 0
with open("/proc/self/status") as f:  # VmHWM: this process's peak (ru_maxrss would carry the parent's over)
    print(next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM")))
"""


def _peak_resident_bytes(*command) -> int:
    """The peak resident memory of a ``pyro-vae`` command run in a fresh process, with glibc's default trimming
    of freed memory (the command otherwise keeps up to 256 MB of freed memory for reuse, whatever the data)."""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def _write_rows(path, num_rows, width=784):
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(num_rows, width))
    rng = np.random.default_rng(0)
    for start in range(0, num_rows, 20000):
        array[start : start + 20000] = rng.random((min(20000, num_rows - start), width), dtype=np.float32)
    array.flush()
    del array


def _train_and_evaluate_peaks(tmp_path, name):
    out = str(tmp_path / f"{name}-run")
    train = ["train", "--dataset", str(tmp_path / f"{name}.npy"), "--epochs", "1", "--batch-size", "100"]
    train += ["--hidden-sizes", "16", "--latent-dim", "2", "--no-progress", "--set", "data.memory_map=true"]
    evaluate = ["evaluate", out, "--num-samples", "5", "--data-batch-size", "1000", "--no-progress"]
    return _peak_resident_bytes(*train, "--out", out), _peak_resident_bytes(*evaluate)


def _check_memory_does_not_grow_with_the_file(tmp_path, num_rows):
    """Training one epoch and evaluating every test example on a file of ``num_rows`` rows takes about the peak
    resident memory of the same commands on a 5,000-row file: the file is read a batch at a time."""
    _write_rows(tmp_path / "large.npy", num_rows)
    _write_rows(tmp_path / "small.npy", 5000)
    file_bytes = os.path.getsize(tmp_path / "large.npy")
    large, small = _train_and_evaluate_peaks(tmp_path, "large"), _train_and_evaluate_peaks(tmp_path, "small")
    for command, grown in zip(("train", "evaluate"), (large[0] - small[0], large[1] - small[1])):
        assert grown < file_bytes / 20, f"{command}: peak resident memory grew by {grown / 2**20:.0f} MiB"


def test_peak_memory_does_not_grow_with_a_quarter_gigabyte_file(tmp_path):
    _check_memory_does_not_grow_with_the_file(tmp_path, num_rows=2**28 // (784 * 4))


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_a_one_gigabyte_file(tmp_path):
    _check_memory_does_not_grow_with_the_file(tmp_path, num_rows=2**30 // (784 * 4) + 1)
