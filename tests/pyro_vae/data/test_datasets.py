import math
import os
import shutil

import pytest
import torch

from pyro_vae.data import datasets as data
from pyro_vae.data.datasets import (
    DATASETS,
    batches,
    binarize,
    fixed_binarization,
    load_dataset,
    read_idx_images,
)
from pyro_vae.data.linear_gaussian import LinearGaussian
from tests.conftest import require_fashion_mnist

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def fashion_mnist():
    require_fashion_mnist()
    return load_dataset("fashion-mnist", seed=0)


def rows_as_set(x):
    return {tuple(row) for row in x.tolist()}


# ---------------------------------------------------------------------------------------------------------------
# digits


def test_digits_splits_partition_the_data_by_seed():
    from sklearn.datasets import load_digits

    everything = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16
    splits = load_dataset("digits", seed=0)
    assert (splits.train.shape, splits.val.shape, splits.test.shape) == ((1439, 64), (179, 64), (179, 64))
    assert splits.train.dtype == torch.float32 and splits.image_shape == (1, 8, 8) and splits.binary_ok
    train, val, test = (rows_as_set(x) for x in (splits.train, splits.val, splits.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == rows_as_set(everything)  # the 1797 rows of digits are all distinct
    # grey levels 0..16 scaled to [0, 1]
    assert splits.train.min() == 0 and splits.train.max() == 1
    assert torch.equal(splits.test * 16, (splits.test * 16).round())

    again = load_dataset("digits", seed=0)
    assert all(torch.equal(getattr(splits, s), getattr(again, s)) for s in ("train", "val", "test"))
    other = load_dataset("digits", seed=1)
    assert rows_as_set(other.test) != test


def test_truncation_keeps_the_first_rows_and_rejects_bad_sizes():
    full = load_dataset("digits", seed=3)
    small = load_dataset("digits", seed=3, num_train=100, num_val=10, num_test=20)
    assert torch.equal(small.train, full.train[:100])
    assert torch.equal(small.val, full.val[:10]) and torch.equal(small.test, full.test[:20])
    with pytest.raises(ValueError, match="has 1439 train examples"):
        load_dataset("digits", num_train=5000)
    with pytest.raises(ValueError, match="between 1 and 179"):
        load_dataset("digits", num_val=0)
    with pytest.raises(ValueError, match="num_test=2.5"):
        load_dataset("digits", num_test=2.5)


def test_unknown_dataset_names_the_choices():
    names = ["cifar10", "digits", "fashion-mnist", "fashion-mnist-32", "linear-gaussian", "mnist", "qmnist"]
    with pytest.raises(ValueError, match="Did you mean 'mnist'.*" + ", ".join(names)):
        load_dataset("mnst")
    assert DATASETS.names() == names


# ---------------------------------------------------------------------------------------------------------------
# linear-gaussian


def test_linear_gaussian_data_follow_the_source_model():
    splits = load_dataset("linear-gaussian", seed=0)
    source = splits.source
    assert isinstance(source, LinearGaussian)
    assert (splits.train.shape, splits.val.shape, splits.test.shape) == ((10000, 10), (1000, 10), (1000, 10))
    assert splits.image_shape is None and not splits.binary_ok
    x = torch.cat([splits.train, splits.val, splits.test]).double()
    n = x.shape[0]
    cov = source.marginal().covariance_matrix.double()
    # sample mean: within 5 standard errors sqrt(Sigma_ii / n) of b
    z_mean = (x.mean(0) - source.bias.double()) / (cov.diagonal() / n).sqrt()
    assert z_mean.abs().max() < 5
    # sample covariance: Var(S_ij) ~= (Sigma_ii Sigma_jj + Sigma_ij^2) / n for Gaussian data
    sample_cov = torch.cov(x.T)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((sample_cov - cov) / se_cov).abs().max() < 5
    # exact log p(x) on the test split averages to -entropy within 5 standard errors
    log_px = source.log_marginal(splits.test).double()
    neg_entropy = -source.marginal().entropy().double()
    assert abs(log_px.mean() - neg_entropy) < 5 * log_px.std() / math.sqrt(log_px.numel())

    other = load_dataset("linear-gaussian", seed=1)
    assert not torch.allclose(other.source.weight, source.weight)
    assert not torch.allclose(other.test, splits.test)


def test_linear_gaussian_cannot_be_binarized():
    splits = load_dataset("linear-gaussian", num_train=50)
    with pytest.raises(ValueError, match=r"Bernoulli means in \[0, 1\]"):
        batches(splits.train, 10, shuffle=False, generator=None, dynamic_binarization=True)
    with pytest.raises(ValueError, match=r"Bernoulli means in \[0, 1\]"):
        fixed_binarization(splits.val, 0)


# ---------------------------------------------------------------------------------------------------------------
# fashion-mnist and mnist


def test_fashion_mnist_from_the_debian_package(fashion_mnist):
    splits = fashion_mnist
    assert (splits.train.shape, splits.val.shape, splits.test.shape) == ((54000, 784), (6000, 784), (10000, 784))
    assert splits.train.dtype == torch.float32 and splits.image_shape == (1, 28, 28) and splits.binary_ok
    assert splits.train.min() == 0 and splits.train.max() == 1
    # The commonly quoted normalization constants of the 60000 training images: mean 0.2860, sd 0.3530.
    official_train = torch.cat([splits.train, splits.val]).double()
    assert abs(official_train.mean().item() - 0.2860) < 5e-5
    assert abs(official_train.std().item() - 0.3530) < 5e-5
    # The test split is in file order: the grey levels of its first image (an ankle boot) sum to 33456.
    assert (splits.test[0] * 255).round().sum().item() == 33456


def test_fashion_mnist_validation_is_a_seeded_tenth_of_the_training_file(fashion_mnist):
    images = read_idx_images(os.path.join(DEBIAN_FOLDER, "train-images-idx3-ubyte.gz"))
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    splits = fashion_mnist
    # train and val together hold every training image once: compare two fingerprints of each image, as multisets
    weights = torch.linspace(1, 2, 784, dtype=torch.float64)

    def fingerprints(x):
        x = x.double()
        return torch.stack([x.sum(-1), x @ weights]).sort(-1).values

    expected = fingerprints(images.flatten(1))
    found = fingerprints(torch.cat([splits.train, splits.val]) * 255)
    assert torch.allclose(found, expected, rtol=0, atol=1e-2)
    other = load_dataset("fashion-mnist", seed=1, num_val=100)
    assert not torch.equal(other.val, splits.val[:100])
    assert torch.equal(load_dataset("fashion-mnist", seed=1, num_test=100).test, splits.test[:100])


@pytest.mark.parametrize("layout", ["torchvision-gz", "torchvision-raw", "flat-raw"])
def test_fashion_mnist_from_a_root_folder(tmp_path, monkeypatch, fashion_mnist, layout):
    from torchvision.datasets.utils import extract_archive

    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_FOLDERS", ())  # only `root` can supply the files
    folder = tmp_path / "FashionMNIST" / "raw" if layout.startswith("torchvision") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for filename in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        if layout.endswith("gz"):
            shutil.copy(os.path.join(DEBIAN_FOLDER, filename), folder / filename)
        else:
            extract_archive(os.path.join(DEBIAN_FOLDER, filename), str(folder))
    assert {p.name.endswith(".gz") for p in folder.iterdir()} == {layout.endswith("gz")}

    splits = load_dataset("fashion-mnist", root=str(tmp_path), seed=0)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(splits, split), getattr(fashion_mnist, split))


def test_missing_files_raise_with_the_fixes(tmp_path, monkeypatch):
    system = str(tmp_path / "not-installed")
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_FOLDERS", (system,))
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("fashion-mnist")
    message = str(error.value)
    for expected in (
        "train-images-idx3-ubyte",
        system,
        "apt-get install dataset-fashion-mnist",
        "--data-root",
        "--download",
    ):
        assert expected in message
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("fashion-mnist", root=str(tmp_path))
    assert str(tmp_path / "FashionMNIST" / "raw") in str(error.value) and system not in str(error.value)
    with pytest.raises(FileNotFoundError, match="no root given.*--data-root.*--download"):
        load_dataset("mnist")


def test_a_named_root_without_files_never_falls_back_to_the_system_copy(tmp_path):
    require_fashion_mnist()
    with pytest.raises(FileNotFoundError, match="found no train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", root=str(tmp_path))


def test_download_goes_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data = torch.full((20 if train else 5, 28, 28), 51 if train else 102, dtype=torch.uint8)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(FileNotFoundError):
        load_dataset("mnist", root=str(tmp_path))
    assert calls == []
    splits = load_dataset("mnist", root=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert (splits.train.shape, splits.val.shape, splits.test.shape) == ((18, 784), (2, 784), (5, 784))
    assert torch.allclose(splits.train, torch.tensor(0.2)) and torch.allclose(splits.test, torch.tensor(0.4))


# ---------------------------------------------------------------------------------------------------------------
# binarization


def test_binarize_draws_bernoulli_with_mean_x():
    x = load_dataset("digits", seed=0).val  # 179 x 64 grey levels
    num_draws = 400
    generator = torch.Generator().manual_seed(0)
    total = torch.zeros_like(x)
    for _ in range(num_draws):
        b = binarize(x, generator)
        assert b.dtype == x.dtype and bool(((b == 0) | (b == 1)).all())
        total += b
    mean = total / num_draws
    # pixels that are exactly 0 or 1 are never flipped
    assert torch.equal(mean[(x == 0) | (x == 1)], x[(x == 0) | (x == 1)])
    inside = (x > 0) & (x < 1)
    z = (mean - x)[inside] / (x * (1 - x) / num_draws).sqrt()[inside]
    assert z.abs().max() < 5.5  # ~2300 pixels strictly inside (0, 1)
    assert abs(z.mean().item()) < 4 / math.sqrt(z.numel())  # their average z-score ~ N(0, 1 / count)


def test_fixed_binarization_is_reproducible_by_seed():
    x = load_dataset("digits", seed=0).test
    a, b, c = fixed_binarization(x, 7), fixed_binarization(x, 7), fixed_binarization(x, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(((a == 0) | (a == 1)).all())
    se = (x * (1 - x)).sum().sqrt() / x.numel()
    assert abs(a.mean() - x.mean()) < 5 * se


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_binarize_rejects_values_outside_the_unit_interval(bad):
    x = torch.full((3, 4), 0.5)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"Bernoulli means in \[0, 1\].*binary_ok"):
        binarize(x)


# ---------------------------------------------------------------------------------------------------------------
# minibatches


def test_batches_cover_every_example_once_per_pass():
    x = torch.arange(103, dtype=torch.float32).unsqueeze(-1)
    stream = batches(x, 10, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(stream) == 11 and stream.num_data == 103
    orders = []
    for _ in range(2):
        pass_batches = list(stream)
        assert len(pass_batches) == 11 and all(len(b) == 1 for b in pass_batches)
        assert [b[0].shape[0] for b in pass_batches] == [10] * 10 + [3]
        order = torch.cat([b[0] for b in pass_batches]).squeeze(-1)
        assert torch.equal(order.sort().values, x.squeeze(-1))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])  # reshuffled every pass
    in_order = torch.cat([b[0] for b in batches(x, 10, shuffle=False, generator=None)])
    assert torch.equal(in_order, x)


def test_dynamic_binarization_redraws_every_pass_with_mean_x():
    x = load_dataset("digits", seed=0).val
    stream = batches(x, 64, shuffle=False, generator=torch.Generator().manual_seed(1), dynamic_binarization=True)
    num_passes = 400
    passes = [torch.cat([b[0] for b in stream]) for _ in range(num_passes)]
    assert not torch.equal(passes[0], passes[1])
    mean = torch.stack(passes).mean(0)
    inside = (x > 0) & (x < 1)
    z = (mean - x)[inside] / (x * (1 - x) / num_passes).sqrt()[inside]
    assert z.abs().max() < 5.5
    assert abs(z.mean().item()) < 4 / math.sqrt(z.numel())


def test_stream_is_a_function_of_the_generator_state():
    x = load_dataset("digits", seed=0).val

    def two_passes(generator):
        stream = batches(x, 32, shuffle=True, generator=generator, dynamic_binarization=True)
        return [b[0] for _ in range(2) for b in stream]

    generator = torch.Generator().manual_seed(5)
    generator.manual_seed(123)
    state = generator.get_state()
    first = two_passes(generator)
    generator.set_state(state)
    second = two_passes(generator)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    third = two_passes(torch.Generator().manual_seed(124))
    assert not all(torch.equal(a, b) for a, b in zip(first, third, strict=True))


def test_batches_reject_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batches(torch.zeros(5, 2), 0, shuffle=False, generator=None)
    with pytest.raises(ValueError, match="at least one row"):
        batches(torch.zeros(0, 2), 4, shuffle=False, generator=None)
