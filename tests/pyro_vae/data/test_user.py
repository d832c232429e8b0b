"""The user's own data files: every format loads into the same splits, every malformed file gets a clear error."""

import gzip

import numpy as np
import pytest
import torch

from pyro_vae.cli.main import main
from pyro_vae.data import load_dataset
from pyro_vae.data.datasets import DataError

ROWS = np.random.default_rng(0).random((50, 6))


def write(path, kind):
    if kind == "npy":
        np.save(path, ROWS)
    elif kind == "npz":
        np.savez(path, x=ROWS, y=np.arange(50))
    elif kind == "pt":
        torch.save({"x": torch.from_numpy(ROWS), "y": torch.arange(50)}, path)
    else:
        header = "a,b,c,d,e,f,label\n"
        path.write_text(
            header + "\n".join(",".join(map(str, row.tolist())) + f",{i % 3}" for i, row in enumerate(ROWS))
        )


@pytest.mark.parametrize("kind", ["npy", "npz", "pt", "csv"])
def test_every_format_gives_the_same_seeded_splits(tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    write(path, kind)
    splits = load_dataset(str(path), seed=3)
    reference = load_dataset(str(_npy(tmp_path)), seed=3)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [40, 5, 5]
    for split in ("train", "val", "test"):
        assert torch.allclose(getattr(splits, split), getattr(reference, split))  # labels set aside
    assert splits.binary_ok and splits.image_shape is None and splits.train.dtype == torch.float32


def _npy(tmp_path):
    path = tmp_path / "reference.npy"
    np.save(path, ROWS)
    return path


def test_images_keep_their_shape(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).random((30, 4, 5)))
    splits = load_dataset(str(path))
    assert splits.image_shape == (1, 4, 5) and splits.train.shape[1] == 20


@pytest.mark.parametrize(
    "content, message",
    [
        (np.zeros((2, 3)), "at least 3 non-empty rows"),
        (np.zeros(10), "one data point a row"),
        (np.array([["a", "b"]] * 5), "not numbers"),
        (np.array([[1.0, np.nan]] * 10), "NaN or infinite values"),
        (np.array([[1.0, np.inf]] * 10), "NaN or infinite values"),
    ],
)
def test_malformed_arrays_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_a_csv_with_text_in_a_row_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,2\n3,x\n5,6\n")
    with pytest.raises(DataError, match="could not be read as .csv data"):
        load_dataset(str(path))


def test_user_data_trains_from_the_cli(tmp_path, capsys):
    path = tmp_path / "mine.npz"
    write(path, "npz")
    out = tmp_path / "run"
    args = ["--dataset", str(path), "--epochs", "1", "--batch-size", "10", "--hidden-sizes", "8", "--no-progress"]
    assert main(["train", *args, "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--num-samples", "10", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert '"dataset": "' + str(path) in printed and '"split_source": "seeded"' in printed


def own_split(path, **changes):
    """An ``.npz`` holding the user's own split of :data:`ROWS` (30 / 10 / 10 rows, in file order) and labels."""
    arrays = {"train": ROWS[:30], "valid": ROWS[30:40], "test": ROWS[40:], "train_labels": np.arange(30), **changes}
    np.savez(path, **{name: array for name, array in arrays.items() if array is not None})
    return str(path)


def test_a_file_with_its_own_split_is_used_as_given(tmp_path):
    splits = load_dataset(own_split(tmp_path / "own.npz"), seed=3, num_test=4)
    assert splits.split_source == "file"
    assert torch.equal(splits.train, torch.from_numpy(ROWS[:30]).float())  # not permuted by the seed
    assert torch.equal(splits.val, torch.from_numpy(ROWS[30:40]).float())
    assert torch.equal(splits.test, torch.from_numpy(ROWS[40:44]).float())
    assert load_dataset(str(_npy(tmp_path))).split_source == "seeded"


def test_the_evaluation_records_that_the_split_came_from_the_file(tmp_path):
    import json

    path, out = own_split(tmp_path / "own.npz"), tmp_path / "run"
    args = ["--dataset", path, "--epochs", "1", "--batch-size", "10", "--hidden-sizes", "8", "--no-progress"]
    assert main(["train", *args, "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--num-samples", "10", "--no-progress", "--posterior-examples"]) == 0
    with open(out / "eval" / "is-test.json") as f:
        report = json.load(f)
    assert report["split_source"] == "file" and report["num_examples"] == 10


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"test": ROWS[40:, :5]}, "splits of different widths (train (6,), val (6,), test (5,))"),
        ({"test": np.concatenate([ROWS[40:], ROWS[7:8]])}, "test row 10 equals train row 7: the splits overlap"),
        ({"valid": ROWS[29:39]}, "val row 0 equals train row 29: the splits overlap"),
        ({"train": None}, "but no 'train'"),
        ({"val": ROWS[30:40]}, "both 'val' and 'valid'"),
    ],
)
def test_a_split_that_does_not_fit_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, changes, message):
    path, out = own_split(tmp_path / "own.npz", **changes), tmp_path / "run"
    assert main(["train", "--dataset", path, "--batch-size", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists(), err


@pytest.mark.parametrize("garbage", ["random", "not-gzip"])
def test_garbage_files_under_data_root_get_a_clear_error(tmp_path, capsys, garbage):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        if garbage == "random":
            (root / name).write_bytes(np.random.default_rng(0).bytes(5000))
        else:
            (root / (name + ".gz")).write_bytes(b"this is not gzip data at all")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "fashion-mnist", "--data-root", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a" in err and "IDX image file" in err and "\n" not in err and not out.exists()


def test_a_failed_download_gets_a_clear_error(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--download", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "downloading MNIST" in err and "internet" in err and not out.exists()


def test_gzip_files_still_load(tmp_path):
    """The checks do not refuse good files: a real IDX header and pixels, gzipped."""
    root = tmp_path / "root"
    root.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (12, 4, 4), dtype=np.uint8)
    header = (2051).to_bytes(4, "big") + (12).to_bytes(4, "big") + (4).to_bytes(4, "big") * 2
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        with gzip.open(root / (name + ".gz"), "wb") as f:
            f.write(header + images.tobytes())
    splits = load_dataset("mnist", root=str(root))
    assert splits.image_shape == (1, 4, 4) and len(splits.test) == 12


def test_a_csv_label_column_may_hold_text(tmp_path):
    path = tmp_path / "named.csv"
    path.write_text("a,b,label\n" + "\n".join(f"{i / 10},{i / 20},class-{i % 2}" for i in range(10)))
    splits = load_dataset(str(path))
    assert splits.train.shape[1] == 2


class Payload:
    def __reduce__(self):
        return (print, ("this would run",))


@pytest.mark.parametrize(
    "name, write_file, message",
    [
        ("random.npz", lambda path: path.write_bytes(np.random.default_rng(1).bytes(300)), "not numbers in NumPy"),
        ("random.npy", lambda path: path.write_bytes(np.random.default_rng(1).bytes(300)), "not numbers in NumPy"),
        ("objects.npy", lambda path: np.save(path, np.array([{}] * 5, dtype=object)), "never loads"),
        ("random.pt", lambda path: path.write_bytes(np.random.default_rng(1).bytes(300)), "not a torch file"),
        ("objects.pt", lambda path: torch.save({"x": Payload()}, path), "holds Python objects (print)"),
    ],
)
def test_unreadable_files_get_one_line_that_never_advises_unsafe_loading(tmp_path, capsys, name, write_file, message):
    path = tmp_path / name
    write_file(path)
    assert main(["train", "--dataset", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("pyro-vae train: error: "), err
    for unsafe in ("allow_pickle", "weights_only", "pickle.load", "safe_globals", "trust"):
        assert unsafe not in err, err
