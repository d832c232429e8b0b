"""Datasets with fixed train / validation / test splits, Bernoulli binarization, and minibatches.

Every dataset is a float32 matrix ``[N, D]`` (images flattened, pixels scaled to ``[0, 1]``) split by a seed:

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, pixel values 0..16 divided by 16), split by a seeded
  permutation into 80% train, 10% validation, 10% test (1439 / 179 / 179).
* ``fashion-mnist`` and ``mnist``: the official 10000-image test set in file order; the official 60000 training
  images are permuted by the seed and the last 10% of the permutation (6000) is the validation set, the first 54000
  the training set. Read with torchvision's IDX reader from local files; downloaded by torchvision only when asked.
* ``linear-gaussian``: 10000 / 1000 / 1000 draws from ``LinearGaussian.random(data_dim=10, latent_dim=2,
  sigma=0.5, seed=seed)``, which is kept as ``Splits.source`` so that log p(x) is known exactly.

Grey levels in ``[0, 1]`` are read as Bernoulli means. Training uses *dynamic* binarization: a fresh draw
``x_b ~ Bernoulli(x)`` every time an example is visited (Burda et al. 2016), which acts as data augmentation;
evaluation uses one *fixed* draw per seed (Salakhutdinov and Murray 2008), so log p(x) of different methods is
measured on the same binary data.

References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    R. Salakhutdinov, I. Murray. On the Quantitative Analysis of Deep Belief Networks. ICML 2008.
    H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
    Algorithms. arXiv:1708.07747, 2017.
    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-Based Learning Applied to Document Recognition.
    Proc. IEEE, 1998.
    E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning Repository, 1998.
"""

import dataclasses
import math
import os
import tempfile
from typing import Optional

import numpy as np
import torch

from inference.registry import Registry
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.data.mapped import DrawnRows, first_rows, is_lazy, row_chunks
from pyro_vae.data.splits import DataError, Splits, split_by_permutation
from pyro_vae.data.user import is_user_data, load_user_data

DATASETS = Registry("dataset")

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_SYSTEM_FOLDERS = ("/usr/share/datasets/fashion-mnist",)
#: Where ``download=True`` puts files when no ``root`` is given.
DEFAULT_DOWNLOAD_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "pyro-vae", "datasets")
#: The IDX image files of the MNIST family (labels are not needed by a VAE).
IDX_IMAGE_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
#: Fraction of the official MNIST-family training set held out for validation.
VALIDATION_FRACTION = 0.1


def load_dataset(
    name: str,
    *,
    root: Optional[str] = None,
    download: bool = False,
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    memory_map: Optional[bool] = None,
) -> Splits:
    """Load dataset ``name`` (one of ``DATASETS.names()``) split by ``seed``.

    :param name: a registered data set, or the path of the user's own ``.npy``, ``.npz``, ``.pt`` or ``.csv``
        file (:mod:`pyro_vae.data.user`).
    :param root: a folder holding the data files (for ``fashion-mnist`` / ``mnist``: torchvision's layout
        ``root/FashionMNIST/raw/`` or ``root/MNIST/raw/``, or the IDX files directly, ``.gz`` or not).
    :param download: let torchvision download missing files into ``root`` (needs internet).
    :param num_train, num_val, num_test: keep only the first this many examples of a split (fast subsets; the
        train and validation splits are already in seeded random order).
    :param memory_map: for the user's ``.npy`` or ``.npz``: read the rows from disk as they are used, so the data
        need not fit in memory (:mod:`pyro_vae.data.mapped`); ``None`` does so for files larger than 1 GiB.
    """
    if is_user_data(name):
        splits = load_user_data(name, seed=seed, memory_map=memory_map)
    else:
        splits = DATASETS.build(name, root=root, download=download, seed=seed)
    check_finite(splits)
    return truncate(splits, num_train=num_train, num_val=num_val, num_test=num_test)


def check_finite(splits: Splits) -> None:
    """Refuse data with NaN or infinite values, naming the split and the first bad row."""
    for split in ("train", "val", "test"):
        bad = torch.cat([(~torch.isfinite(x)).reshape(len(x), -1).any(1) for x in row_chunks(getattr(splits, split))])
        bad = bad.nonzero()
        if len(bad):
            raise DataError(
                f"data set '{splits.name}' has NaN or infinite values in {len(bad)} {split} rows (the first is row "
                f"{bad[0].item()} of that split): remove or impute them before training"
            )


def truncate(splits: Splits, **sizes: Optional[int]) -> Splits:
    """Keep the first ``num_<split>`` rows of each split named in ``sizes``."""
    kept = {}
    for key, size in sizes.items():
        split = key.removeprefix("num_")
        if size is None:
            continue
        available = getattr(splits, split).shape[0]
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= available:
            raise ValueError(
                f"{key}={size!r}: dataset '{splits.name}' has {available} {split} examples; "
                f"ask for an integer between 1 and {available}, or None for all of them"
            )
        kept[split] = first_rows(getattr(splits, split), size)
    return dataclasses.replace(splits, **kept)


# ---------------------------------------------------------------------------------------------------------------
# Binarization


def binarize(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One draw ``b ~ Bernoulli(x)`` elementwise, same dtype as ``x``."""
    _check_probabilities(x, "binarize")
    return torch.bernoulli(x, generator=generator)


def dequantize(k: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform dequantization of 8-bit levels ``k`` in ``0..255``: ``y = (k + u) / 256`` with ``u ~ U(0, 1)``, so
    ``y`` lies in the open interval (0, 1) and any density on it bounds the mass of ``k`` from below (Theis et al.
    2016, "A note on the evaluation of generative models")."""
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype).clamp_(min=1e-6)
    return (k + u) / 256


def fixed_dequantization(k, seed: int):
    """:func:`dequantize` with a generator seeded by ``seed``: the same values every call (for evaluation). Rows
    on disk give rows on disk, dequantized as they are read (:class:`~pyro_vae.data.mapped.DrawnRows`)."""
    if is_lazy(k):
        return DrawnRows(k, dequantize, seed)
    return dequantize(k, torch.Generator(device=k.device).manual_seed(seed))


def fixed_binarization(x, seed: int):
    """:func:`binarize` with a generator seeded by ``seed``: the same binary data every call (for evaluation). Rows
    on disk give rows on disk, binarized as they are read (:class:`~pyro_vae.data.mapped.DrawnRows`)."""
    if is_lazy(x):
        _check_probabilities(x, "binarize")
        return DrawnRows(x, binarize, seed)
    return binarize(x, torch.Generator(device=x.device).manual_seed(seed))


def _check_probabilities(x, caller: str):
    if not x.dtype.is_floating_point:
        raise TypeError(f"{caller} expects a floating point tensor of probabilities, got {x.dtype}")
    pieces = (lambda: row_chunks(x)) if is_lazy(x) else (lambda: [x])  # rows on disk: a chunk at a time
    if all(bool(((p >= 0) & (p <= 1)).all()) for p in pieces() if p.numel()):
        return
    low, high, nan = math.inf, -math.inf, False
    for p in pieces():
        finite = p[torch.isfinite(p)]
        if finite.numel():
            low, high = min(low, finite.min().item()), max(high, finite.max().item())
        nan = nan or bool(torch.isnan(p).any())
    value_range = f"[{low:.4g}, {high:.4g}]" if low <= high else "none"
    raise ValueError(
        f"{caller} expects Bernoulli means in [0, 1], but the data has values outside it (finite range "
        f"{value_range}, NaN present: {nan}). Binarize only pixel data scaled to [0, 1] (Splits.binary_ok), or "
        "use a likelihood for real-valued data."
    )


# ---------------------------------------------------------------------------------------------------------------
# Minibatches


class Batches:
    """Minibatches of the rows of ``x``: each iteration is one pass (epoch) and yields 1-tuples ``(x_batch,)``,
    so a training loop can call ``trainer.step(*batch)``.

    Each pass draws a new permutation from ``generator`` (when ``shuffle``) and, with ``dynamic_binarization``,
    a new ``x_batch ~ Bernoulli(x[idx])`` (with ``dequantization``, a new :func:`dequantize` of the 8-bit levels
    ``x[idx]``) from the same generator, so the whole stream is a function of the generator's state. The last batch
    of a pass may be smaller.

    :param int num_data: ``len(x)``, the data plate's ``size``.
    """

    def __init__(self, x, batch_size, *, shuffle, generator=None, dynamic_binarization=False, dequantization=False):
        if not (isinstance(x, torch.Tensor) or is_lazy(x)) or x.dim() == 0 or x.shape[0] == 0:
            raise ValueError("batches needs a tensor (or rows on disk) with at least one row (one example per row)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if dynamic_binarization:
            _check_probabilities(x, "dynamic binarization")
        self.x = x
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.dynamic_binarization = dynamic_binarization
        self.dequantization = dequantization

    @property
    def num_data(self) -> int:
        return self.x.shape[0]

    def __len__(self) -> int:
        return math.ceil(self.num_data / self.batch_size)

    def __iter__(self):
        if self.shuffle:
            device = self.generator.device if self.generator is not None else "cpu"
            order = torch.randperm(self.num_data, generator=self.generator, device=device)
        else:
            order = torch.arange(self.num_data)
        # Indexing with a slice of a permutation copies one batch at a time, with no per-example Python.
        for idx in order.split(self.batch_size):
            x_batch = self.x[idx]
            if self.dynamic_binarization:
                x_batch = torch.bernoulli(x_batch, generator=self.generator)
            if self.dequantization:
                x_batch = dequantize(x_batch, self.generator)
            yield (x_batch,)

    def __repr__(self):
        return (
            f"Batches(num_data={self.num_data}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"dynamic_binarization={self.dynamic_binarization})"
        )


def batches(x, batch_size, *, shuffle, generator, dynamic_binarization=False, dequantization=False) -> Batches:
    """Re-iterable minibatches of ``x``; see :class:`Batches`."""
    return Batches(
        x,
        batch_size,
        shuffle=shuffle,
        generator=generator,
        dynamic_binarization=dynamic_binarization,
        dequantization=dequantization,
    )


# ---------------------------------------------------------------------------------------------------------------
# Datasets


@DATASETS.register("digits")
def load_digits(*, root=None, download=False, seed=0) -> Splits:
    """scikit-learn's bundled 8x8 handwritten digits (no files needed), split 80 / 10 / 10 by ``seed``."""
    from sklearn.datasets import load_digits as sklearn_digits

    pixels = torch.as_tensor(sklearn_digits().data, dtype=torch.float32) / 16.0
    num_held_out = pixels.shape[0] // 10
    sizes = (pixels.shape[0] - 2 * num_held_out, num_held_out, num_held_out)
    train, val, test = split_by_permutation(pixels, sizes, seed)
    return Splits("digits", train, val, test, image_shape=(1, 8, 8), binary_ok=True, seed=seed)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(*, root=None, download=False, seed=0) -> Splits:
    """Fashion-MNIST (Xiao et al. 2017): ``root``, then the Debian package's folder, then (if ``download``)
    torchvision."""
    return _load_mnist_family(
        "fashion-mnist", "FashionMNIST", root, download, seed, system_folders=FASHION_MNIST_SYSTEM_FOLDERS
    )


@DATASETS.register("mnist")
def load_mnist(*, root=None, download=False, seed=0) -> Splits:
    """MNIST (LeCun et al. 1998) from ``root`` (torchvision layout or the IDX files), or downloaded by
    torchvision if ``download``."""
    return _load_mnist_family("mnist", "MNIST", root, download, seed, system_folders=())


@DATASETS.register("fashion-mnist-32")
def load_fashion_mnist_32(*, root=None, download=False, seed=0) -> Splits:
    """Fashion-MNIST rescaled to 32x32 (bilinear, antialiased), the size the decoder-bandit experiment uses."""
    return resize_images(load_fashion_mnist(root=root, download=download, seed=seed), 32, "fashion-mnist-32")


@DATASETS.register("qmnist")
def load_qmnist(*, root=None, download=False, seed=0) -> Splits:
    """QMNIST (Yadav & Bottou 2019; 60000 training and the 10000-image ``test10k`` test set) through torchvision,
    from ``root`` (torchvision's layout ``root/QMNIST/raw/``), downloaded there only if ``download``."""
    import torchvision

    train, test = (
        _torchvision_images("qmnist", torchvision.datasets.QMNIST, root, download, what=what)
        for what in ("train", "test10k")
    )
    return _split_official("qmnist", train.unsqueeze(1), test.unsqueeze(1), seed)


@DATASETS.register("cifar10")
def load_cifar10(*, root=None, download=False, seed=0) -> Splits:
    """CIFAR-10 (Krizhevsky 2009; 3x32x32 colour images) through torchvision, from ``root`` (torchvision's layout
    ``root/cifar-10-batches-py/``), downloaded there only if ``download``."""
    import torchvision

    train, test = (
        _torchvision_images("cifar10", torchvision.datasets.CIFAR10, root, download, train=split)
        for split in (True, False)
    )
    return _split_official("cifar10", train.permute(0, 3, 1, 2), test.permute(0, 3, 1, 2), seed)


def _torchvision_images(name, dataset_class, root, download, **split) -> torch.Tensor:
    """The uint8 image tensor of one split of a torchvision dataset, or a message that says how to get it."""
    if root is None and not download:
        raise FileNotFoundError(
            f"{name}: no local copy was named. To fix: point --data-root at torchvision's folder for it, or pass "
            "--download to fetch it with torchvision (needs internet)"
        )
    try:
        data = dataset_class(root or DEFAULT_DOWNLOAD_ROOT, download=download, **split).data
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise FileNotFoundError(
            f"{name}: torchvision found no usable copy in {root or DEFAULT_DOWNLOAD_ROOT} ({error}). To fix: point "
            "--data-root at torchvision's folder for it, or pass --download (needs internet)"
        ) from None
    return torch.as_tensor(data)


def _split_official(name, train_images, test_images, seed) -> Splits:
    """The official test set; the official training set permuted by ``seed``, its last 10% for validation."""
    num_val = round(VALIDATION_FRACTION * train_images.shape[0])
    sizes = (train_images.shape[0] - num_val, num_val)
    train, val = split_by_permutation(train_images.flatten(1), sizes, seed)
    return Splits(
        name,
        grey_levels_to_unit_interval(train),
        grey_levels_to_unit_interval(val),
        grey_levels_to_unit_interval(test_images.flatten(1)),
        image_shape=tuple(train_images.shape[1:]),
        binary_ok=True,
        seed=seed,
        split_source="official",
    )


def resize_images(splits: Splits, size: int, name: str) -> Splits:
    """Every image of ``splits`` rescaled to ``size x size`` (bilinear with antialiasing), kept in [0, 1]."""
    import dataclasses

    import torch.nn.functional as F

    channels, height, width = splits.image_shape

    def resize(x):
        images = x.reshape(-1, channels, height, width)
        out = torch.cat(
            [
                F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                for chunk in images.split(4096)
            ]
        )
        return out.clamp_(0, 1).flatten(1)

    return dataclasses.replace(
        splits,
        name=name,
        train=resize(splits.train),
        val=resize(splits.val),
        test=resize(splits.test),
        image_shape=(channels, size, size),
    )


@DATASETS.register("linear-gaussian")
def load_linear_gaussian(*, root=None, download=False, seed=0, num_train=10000, num_val=1000, num_test=1000):
    """Draws from a random linear-Gaussian model (seeded by ``seed``), kept as ``source`` for exact log p(x)."""
    # Independent seeds for the model and the draws (one seed for both would reuse the same random numbers).
    model_seed, data_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    source = LinearGaussian.random(data_dim=10, latent_dim=2, sigma=0.5, seed=model_seed, dtype=torch.float32)
    data = source.sample(num_train + num_val + num_test, seed=data_seed)
    train, val, test = data.split([num_train, num_val, num_test])
    return Splits("linear-gaussian", train, val, test, image_shape=None, binary_ok=False, seed=seed, source=source)


def _load_mnist_family(name, torchvision_name, root, download, seed, system_folders) -> Splits:
    # A root the user names is the only place looked at: falling back to another copy would record the wrong path.
    folders = [os.path.join(root, torchvision_name, "raw"), root] if root is not None else list(system_folders)
    files = find_idx_image_files(folders)
    if files is not None:
        train_images, test_images = (read_idx_images(files[split]) for split in ("train", "test"))
    elif download:
        train_images, test_images = _download_images(torchvision_name, root or DEFAULT_DOWNLOAD_ROOT)
    else:
        raise FileNotFoundError(_missing_images_message(name, torchvision_name, root, folders, system_folders))

    num_val = round(VALIDATION_FRACTION * train_images.shape[0])
    sizes = (train_images.shape[0] - num_val, num_val)
    train, val = split_by_permutation(train_images.flatten(1), sizes, seed)
    image_shape = (1,) + tuple(train_images.shape[1:])
    return Splits(
        name,
        grey_levels_to_unit_interval(train),
        grey_levels_to_unit_interval(val),
        grey_levels_to_unit_interval(test_images.flatten(1)),
        image_shape=image_shape,
        binary_ok=True,
        seed=seed,
        split_source="official",
    )


def _missing_images_message(name, torchvision_name, root, folders, system_folders) -> str:
    """What was looked for where, and the fixes that apply: a root the user named lacks the files, so the
    installed copy (found by dropping the root) or a download serves; with no root, installing or pointing at one."""
    wanted = " and ".join(f"{f}[.gz]" for f in IDX_IMAGE_FILES.values())
    if root is not None:
        where = f"the folder '{root}' (--data-root) lacks the files: found no {wanted} in {', '.join(folders)}"
        fixes = [f"put them in {os.path.join(root, torchvision_name, 'raw')} or in {root} itself"]
        installed = find_idx_image_files(system_folders)
        if installed is not None:
            fixes.append(f"or drop --data-root to read the installed copy in {os.path.dirname(installed['train'])}")
    else:
        where = f"found no {wanted} in {', '.join(folders) if folders else 'nowhere (no root given)'}"
        fixes = [
            f"point root= (--data-root) at a folder holding them (torchvision layout ROOT/{torchvision_name}/raw/ "
            "or the files directly)"
        ]
        if name == "fashion-mnist":
            fixes.insert(0, "install the Debian package (apt-get install dataset-fashion-mnist)")
    fixes.append("or pass download=True (--download) to fetch them with torchvision (needs internet)")
    return f"{name}: {where}. To fix: {'; '.join(fixes)}."


def grey_levels_to_unit_interval(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels 0..255 as float32 in [0, 1]."""
    return pixels.to(torch.float32).div_(255.0)  # in place: one 60000 x 784 float copy, not two


def find_idx_image_files(folders) -> Optional[dict]:
    """``{"train": path, "test": path}`` from the first folder holding both IDX image files (plain preferred
    over ``.gz``), or None."""
    for folder in folders:
        found = {}
        for split, filename in IDX_IMAGE_FILES.items():
            for candidate in (filename, filename + ".gz"):
                if os.path.isfile(os.path.join(folder, candidate)):
                    found[split] = os.path.join(folder, candidate)
                    break
        if len(found) == len(IDX_IMAGE_FILES):
            return found
    return None


def read_idx_images(path: str) -> torch.Tensor:
    """A uint8 tensor ``[N, H, W]`` from an IDX image file, gzipped or not, read by torchvision.

    :raises DataError: for a file that is not a gzip archive although named ``.gz``, or not an IDX image file.
    """
    from torchvision.datasets.mnist import read_image_file
    from torchvision.datasets.utils import extract_archive

    try:
        if not path.endswith(".gz"):
            images = read_image_file(path)
        else:
            with tempfile.TemporaryDirectory() as folder:
                extract_archive(path, folder)  # torchvision's reader needs an uncompressed file on disk
                images = read_image_file(os.path.join(folder, os.path.basename(path)[: -len(".gz")]))
    except (AssertionError, OSError, EOFError, RuntimeError, ValueError, IndexError, KeyError) as e:
        kind = "a gzip archive of an IDX image file" if path.endswith(".gz") else "an IDX image file"
        raise DataError(
            f"'{path}' is not {kind} ({type(e).__name__}: {str(e).strip() or 'bad header'}): replace it with the "
            "original file, or point --data-root at a folder holding the original files"
        ) from None
    if images.dim() != 3 or images.dtype != torch.uint8 or images.shape[0] == 0:
        raise DataError(f"'{path}' holds {tuple(images.shape)} {images.dtype} values, not uint8 images [N, H, W]")
    return images


def _download_images(torchvision_name: str, root: str):
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, torchvision_name)
    try:
        return tuple(dataset_class(root, train=train, download=True).data for train in (True, False))
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError, ... for a failed download
        raise DataError(
            f"downloading {torchvision_name} into '{root}' failed ({type(e).__name__}: {str(e).strip()[:200]}): "
            "check the internet connection, or put the IDX files under --data-root yourself"
        ) from None
