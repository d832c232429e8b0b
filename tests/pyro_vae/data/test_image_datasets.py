"""The 32x32 Fashion-MNIST the bandit uses, and the torchvision loaders (CIFAR-10, QMNIST) from local files."""

import os
import pickle

import numpy as np
import pytest
import torch

from pyro_vae.data import load_dataset
from tests.conftest import require_fashion_mnist


def test_fashion_mnist_32_is_the_28x28_set_rescaled():
    require_fashion_mnist()
    small, large = load_dataset("fashion-mnist", seed=0), load_dataset("fashion-mnist-32", seed=0)
    assert large.image_shape == (1, 32, 32) and large.test.shape == (10000, 1024)
    assert 0 <= large.test.min() and large.test.max() <= 1
    # the same images in the same order: the mean brightness of each image changes little under rescaling
    assert torch.allclose(small.test[:100].mean(1), large.test[:100].mean(1), atol=0.02)


def write_fake_cifar10(root, per_batch=4):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": [0] * per_batch}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    return names


def test_cifar10_loads_from_local_files_in_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    write_fake_cifar10(str(tmp_path))
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # the fake files have no real md5
    splits = load_dataset("cifar10", root=str(tmp_path), seed=0)
    assert splits.image_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 4)
    assert splits.train.shape[1] == 3 * 32 * 32 and 0 <= splits.train.min() and splits.train.max() <= 1
    with open(os.path.join(tmp_path, "cifar-10-batches-py", "test_batch"), "rb") as f:
        first = pickle.load(f)["data"][0]  # stored channel-major: R plane, G plane, B plane
    assert torch.equal((splits.test[0] * 255).round().to(torch.uint8), torch.as_tensor(first))


@pytest.mark.parametrize("name", ["cifar10", "qmnist"])
def test_missing_torchvision_data_says_how_to_get_it(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-root.*--download"):
        load_dataset(name, root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no local copy was named"):
        load_dataset(name)
