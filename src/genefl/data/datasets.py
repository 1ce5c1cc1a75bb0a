"""Datasets, loaded once into normalised, channels-first tensors. No torchvision needed.

- `digits`: scikit-learn's bundled 8x8 digits (the embedded default; no files).
- `mnist`, `fashion_mnist`: the four IDX `.gz` files in torchvision's raw layout
  (`<data_dir>/MNIST/raw/`, `<data_dir>/FashionMNIST/raw/`).
- `cifar10`, `cifar100`: the python-pickle batches (`cifar-10-batches-py/`, `cifar-100-python/`).
- `synthetic`: Synthetic(α, β) of FedProx, generated per client (`data/synthetic.py`), no files;
  it is naturally federated, so it is not loaded here but built by `scenario.build_scenario`.

Every file is md5-checked before it is read. Files are downloaded from the official sources only when
asked (`download=True`), to a temporary name, verified, then moved into place. Any missing, truncated
or corrupt file is a one-line `DataError` naming the file, what was expected and how to get it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
import os
import re
import pickle
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..paths import checked, read_small_text, shown

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "synthetic")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MD5 = {
    "MNIST/raw/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "MNIST/raw/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "MNIST/raw/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "FashionMNIST/raw/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "FashionMNIST/raw/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "FashionMNIST/raw/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffe22b768f3c88",
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}
MIRRORS = {
    "MNIST": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "FashionMNIST": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"],
}
SHAPES = {  # (input shape, classes): what a server needs to build the model without loading data
    "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "synthetic": ((1, 1, 60), 10),
}
STATS = {  # per-channel (mean, std) of the training images scaled to [0, 1]
    "mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass(frozen=True)
class ClientData:
    """One client's data: whole tensors, already on the run's device."""

    x_train: torch.Tensor  # (n, C, H, W)
    y_train: torch.Tensor  # (n,)
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_train(self) -> int:
        return len(self.y_train)


@dataclass(frozen=True)
class Dataset:
    """Whole splits as tensors. Shared by every caller (cached): never modify them in place."""

    name: str
    x_train: torch.Tensor  # (n, C, H, W) float32, normalised
    y_train: torch.Tensor  # (n,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(root: Path, rel: str, checksums: Mapping[str, str], how_to_get: str) -> Path:
    path = root / rel
    if path.exists() and not path.is_file():
        raise DataError(f"data file {path} is not a regular file (expected the {rel} file)")
    if not path.is_file():
        raise DataError(f"missing data file {path} (expected the {rel} file; {how_to_get})")
    expected, actual = checksums.get(rel), md5_of(path)
    if expected is not None and actual != expected:
        raise DataError(f"corrupt data file {path}: md5 {actual}, expected {expected}; delete it and {how_to_get}")
    return path


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (ubyte data) from a gzip file."""
    try:
        with gzip.open(path) as f:
            data = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"unreadable data file {path}: {exc}".replace("\n", " ")) from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"unreadable data file {path}: more than {MAX_IDX_BYTES} bytes once decompressed")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"unreadable data file {path}: not an unsigned-byte IDX file")
    ndim = data[3]
    if ndim not in (1, 3):
        raise DataError(f"unreadable data file {path}: an IDX file of {ndim} dimensions (expected 1 for labels, 3 for images)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset, size = 4 + 4 * ndim, math.prod(dims)  # Python ints: np.prod wraps around in int64
    if len(data) != offset + size:
        raise DataError(f"truncated data file {path}: {len(data) - offset} bytes of data, expected {size}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


MAX_IDX_BYTES = 1 << 30  # the largest real file (MNIST training images) is 47 MB decompressed


def check_split(name: str, where: str, images: np.ndarray, labels: np.ndarray, classes: int, shape: tuple | None) -> None:
    """One split's arrays: (n, C, H, W) images, n integer labels in [0, classes), images of `shape`."""
    if images.ndim != 4 or labels.ndim != 1:
        raise DataError(f"{name} {where}: images of {images.ndim - 1} dimensions / labels of {labels.ndim} "
                        "(expected images (n, H, W) and labels (n,))")
    if len(images) != len(labels):
        raise DataError(f"{name} {where}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{name} {where}: holds no images")
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"{name} {where}: a label of {int(labels.max()) if labels.max() >= classes else int(labels.min())}"
                        f", expected 0..{classes - 1}")
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise DataError(f"{name} {where}: images of shape {tuple(images.shape[1:])}, expected {shape}")


MAX_CLASSES = 100_000  # a classifier head wider than this is a mistake (2**64 classes was accepted once)


def check_dataset(data: Dataset) -> None:
    """A `Dataset` as the simulator uses it, whoever built it (`from_arrays`, or by hand): both splits
    (n, C, H, W) float32 images of one shape with no side of 0, finite, n int64 labels in
    [0, num_classes), 2 <= num_classes <= MAX_CLASSES."""
    if not isinstance(data.name, str):
        raise DataError(f"dataset: its name must be text, got {type(data.name).__name__}")
    classes = data.num_classes
    if not isinstance(classes, int) or isinstance(classes, bool) or not 2 <= classes <= MAX_CLASSES:
        raise DataError(f"{data.name}: num_classes must be an integer in 2..{MAX_CLASSES}, got {str(classes)[:40]}")
    for where, x, y in (("training split", data.x_train, data.y_train), ("test split", data.x_test, data.y_test)):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise DataError(f"{data.name} {where}: images and labels must be tensors (use genefl.data.from_arrays)")
        if x.ndim != 4 or y.ndim != 1:
            raise DataError(f"{data.name} {where}: images of {x.ndim} dimensions / labels of {y.ndim} "
                            "(expected images (n, C, H, W) and labels (n,))")
        if min(x.shape[1:]) < 1:
            raise DataError(f"{data.name} {where}: images of shape {tuple(x.shape[1:])} hold no pixels")
        if tuple(x.shape[1:]) != tuple(data.x_train.shape[1:]):
            raise DataError(f"{data.name} {where}: images of shape {tuple(x.shape[1:])}, but the training images "
                            f"are {tuple(data.x_train.shape[1:])}")
        if len(x) != len(y):
            raise DataError(f"{data.name} {where}: {len(x)} images but {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{data.name} {where}: holds no images")
        if x.dtype != torch.float32 or y.dtype != torch.int64:
            raise DataError(f"{data.name} {where}: images must be float32 and labels int64, got {x.dtype} and {y.dtype}")
        if x.requires_grad:
            raise DataError(f"{data.name} {where}: the image tensor requires grad (pass a detached tensor)")
        if not torch.isfinite(x).all():
            raise DataError(f"{data.name} {where}: images hold NaN or inf")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise DataError(f"{data.name} {where}: a label of {low if low < 0 else high}, expected 0..{classes - 1}")


def normalise(images: np.ndarray, name: str) -> torch.Tensor:
    """uint8 (n, C, H, W) -> float32 with the dataset's per-channel mean 0 and std 1."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in STATS[name])
    return (torch.from_numpy(images.astype(np.float32) / 255.0) - mean) / std


def load_idx_dataset(name: str, root: Path, checksums: Mapping[str, str], download: bool) -> Dataset:
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    if download:
        for filename in IDX_FILES:
            fetch(MIRRORS[folder], filename, root / folder / "raw" / filename, checksums.get(f"{folder}/raw/{filename}"))
    how = f"pass --set download=true, or place the file there from {MIRRORS[folder][0]}{'{'}file{'}'}"
    arrays = [read_idx(verified(root, f"{folder}/raw/{f}", checksums, how)) for f in IDX_FILES]
    x_train, y_train, x_test, y_test = arrays
    shape = SHAPES[name][0]
    check_split(name, "training files", x_train[:, None] if x_train.ndim == 3 else x_train, y_train, 10, shape)
    check_split(name, "test files", x_test[:, None] if x_test.ndim == 3 else x_test, y_test, 10, shape)
    return Dataset(name, normalise(x_train[:, None], name), torch.from_numpy(y_train.astype(np.int64)),
                   normalise(x_test[:, None], name), torch.from_numpy(y_test.astype(np.int64)), 10)


def read_pickle_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)
        return data.reshape(-1, 3, 32, 32), labels  # rows hold the R, G, B planes, each 32x32 row-major
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(f"unreadable data file {path}: {type(exc).__name__}: {exc}".replace("\n", " ")) from None


def load_cifar(name: str, root: Path, checksums: Mapping[str, str], download: bool) -> Dataset:
    folder, archive = ("cifar-10-batches-py", "cifar-10-python.tar.gz") if name == "cifar10" else ("cifar-100-python", "cifar-100-python.tar.gz")
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    test_file, label_key = ("test_batch", b"labels") if name == "cifar10" else ("test", b"fine_labels")
    if download and not (root / folder).is_dir():
        tmp = root / (archive + ".part")
        fetch(MIRRORS[name], "", tmp, checksums.get(archive))
        extract_tar(tmp, root)
        tmp.unlink()
    how = f"pass --set download=true, or extract {MIRRORS[name][0]} into {root}"
    train = [read_pickle_batch(verified(root, f"{folder}/{f}", checksums, how), label_key) for f in train_files]
    x_test, y_test = read_pickle_batch(verified(root, f"{folder}/{test_file}", checksums, how), label_key)
    x_train, y_train = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    classes = SHAPES[name][1]
    check_split(name, "training files", x_train, y_train, classes, SHAPES[name][0])
    check_split(name, "test file", x_test, y_test, classes, SHAPES[name][0])
    return Dataset(name, normalise(x_train, name), torch.from_numpy(y_train), normalise(x_test, name),
                   torch.from_numpy(y_test), 10 if name == "cifar10" else 100)


def fetch(urls: list[str], filename: str, target: Path, md5: str | None) -> None:
    """Download `filename` from the first mirror that answers, verify md5, move into place.
    An existing file with the right md5 is kept."""
    if target.is_file() and (md5 is None or md5_of(target) == md5):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in urls:
        url = base + filename
        try:
            with urllib.request.urlopen(url, timeout=60) as response, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            place_verified(Path(out.name), target, md5)
            return
        except OSError as exc:
            errors.append(f"{url}: {exc}")
    raise DataError(f"could not download {filename or target.name} ({'; '.join(errors)})".replace("\n", " "))


def place_verified(downloaded: Path, target: Path, md5: str | None) -> None:
    """Move a downloaded file into place only if its md5 matches; otherwise delete it."""
    actual = md5_of(downloaded)
    if md5 is not None and actual != md5:
        downloaded.unlink()
        raise DataError(f"downloaded {target.name} has md5 {actual}, expected {md5}; nothing was kept")
    os.replace(downloaded, target)


def extract_tar(archive: Path, root: Path) -> None:
    """Extract a .tar.gz, refusing members that would land outside `root`."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts or not (member.isfile() or member.isdir()):
                    raise DataError(f"refusing to extract {archive}: unsafe member {member.name!r}")
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"unreadable archive {archive}: {exc}") from None


DIGITS_TRAIN = 1437  # of digits_split.npy's 1,797 indices, the first 1,437 are the training split


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 as
    `train_test_split(test_size=0.2, random_state=0, stratify=y)` splits them.

    The images are read from scikit-learn's own data file and put in that split's order, stored in
    digits_split.npy (tests/test_datasets.py checks it against scikit-learn): importing scikit-learn
    costs a process about 2 s, and every Flower ClientApp message is a new process that loads its data.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    bundled = Path(folders[0] if folders else "") / "datasets" / "data" / "digits.csv.gz"
    if not bundled.is_file():
        raise DataError("dataset 'digits' needs scikit-learn's bundled digits.csv.gz (pip install scikit-learn)")
    table = np.loadtxt(bundled, delimiter=",", dtype=np.float32)
    order = np.load(Path(__file__).with_name("digits_split.npy")).astype(np.int64)
    x = torch.from_numpy(table[order, :-1]).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(table[order, -1].astype(np.int64))
    x_train, x_test, y_train, y_test = x[:DIGITS_TRAIN], x[DIGITS_TRAIN:], y[:DIGITS_TRAIN], y[DIGITS_TRAIN:]
    mean, std = x_train.mean(), x_train.std()
    return Dataset("digits", (x_train - mean) / std, y_train, (x_test - mean) / std, y_test, 10)


MAX_CHECKSUM_BYTES = 1 << 20  # a checksum file is a few lines; this refuses /dev/zero and the like


def read_checksum_file(path: str | os.PathLike) -> dict[str, str]:
    """An md5sum-format file (`<md5>  <path relative to data_dir>` per line) as {path: md5}."""
    lines = read_small_text("checksum_file", path, MAX_CHECKSUM_BYTES, DataError, " (not a checksum file)").splitlines()
    table = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{32}", parts[0]):
            raise DataError(f"checksum_file {path}, line {number}: expected '<32 hex md5>  <relative path>'")
        table[parts[1].strip().lstrip("*")] = parts[0].lower()
    return table


def load_dataset(name: str, data_dir: str | os.PathLike | None, download: bool = False,
                 checksums: Mapping[str, str] | None = None) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"dataset: {name!r} is not one of {', '.join(DATASETS)}")
    if name == "synthetic":
        raise DataError("dataset 'synthetic' is generated per client, not loaded: use genefl.data.scenario.build_scenario")
    if name == "digits":
        return _cached_digits()
    if not data_dir:
        raise DataError(f"dataset {name!r} needs files: set data_dir (or the GENEFL_DATA environment variable)")
    root = checked("data_dir", data_dir, DataError).resolve()
    if not root.is_dir() and not download:
        raise DataError(f"data_dir {root} does not exist (create it, or pass --set download=true)")
    if checksums is not None:  # explicit checksums (tests): no caching
        return _load_files(name, root, dict(checksums), download)
    return _cached_files(name, str(root), download)


@functools.lru_cache(maxsize=1)
def _cached_digits() -> Dataset:
    return load_digits_dataset()


@functools.lru_cache(maxsize=4)
def _cached_files(name: str, root: str, download: bool) -> Dataset:
    return _load_files(name, Path(root), MD5, download)


def _load_files(name: str, root: Path, checksums: Mapping[str, str], download: bool) -> Dataset:
    if name in ("mnist", "fashion_mnist"):
        return load_idx_dataset(name, root, checksums, download)
    return load_cifar(name, root, checksums, download)
