"""Dataset readers on small real-format files written here, and on the real files when present."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from genefl.data.datasets import extract_tar, load_dataset, md5_of, place_verified
from genefl.errors import DataError

IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root, folder="MNIST", n_train=20, n_test=10):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
              rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10]
    arrays[0][0, 0, 0] = 255  # a known pixel
    for name, array in zip(IDX, arrays):
        (raw / name).write_bytes(gzip.compress(idx_bytes(array)))
    return {f"{folder}/raw/{name}": md5_of(raw / name) for name in IDX}


def test_digits_is_embedded_and_split_deterministically():
    d = load_dataset("digits", None)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.num_classes == 10
    assert len(d.y_train) + len(d.y_test) == 1797 and len(d.y_test) == 360
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert torch.equal(load_dataset("digits", None).y_test, d.y_test)


def test_digits_are_scikit_learns_stratified_split_in_its_order():
    """The stored split order is scikit-learn's train_test_split(test_size=0.2, random_state=0,
    stratify=y), image for image and in the same order."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from genefl.data.datasets import load_digits_dataset

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = x_train.mean(), x_train.std()
    d = load_digits_dataset()
    assert torch.equal(d.x_train, (x_train - mean) / std) and torch.equal(d.x_test, (x_test - mean) / std)
    assert torch.equal(d.y_train, y_train) and torch.equal(d.y_test, y_test)


def test_idx_files_load_with_checksums(tmp_path):
    sums = write_mnist(tmp_path)
    d = load_dataset("mnist", tmp_path, checksums=sums)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.y_train.dtype == torch.int64 and d.y_train.tolist() == [i % 10 for i in range(20)]
    assert d.x_train[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.1307) / 0.3081, rel=1e-5)


def test_fashion_layout(tmp_path):
    sums = write_mnist(tmp_path, "FashionMNIST")
    d = load_dataset("fashion_mnist", tmp_path, checksums=sums)
    assert d.x_train[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.2860) / 0.3530, rel=1e-5)


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_truncated_idx_file_is_named(tmp_path):
    sums = write_mnist(tmp_path)
    path = tmp_path / "MNIST/raw" / IDX[0]
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))
    sums[f"MNIST/raw/{IDX[0]}"] = md5_of(path)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, checksums=sums)
    assert "truncated" in one_line(err) and IDX[0] in one_line(err)


def test_wrong_md5_names_expected_and_actual(tmp_path):
    sums = write_mnist(tmp_path)
    sums[f"MNIST/raw/{IDX[1]}"] = "0" * 32
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, checksums=sums)
    assert "0" * 32 in one_line(err) and IDX[1] in one_line(err) and "md5" in one_line(err)


def test_missing_file_and_missing_dir(tmp_path):
    sums = write_mnist(tmp_path)
    (tmp_path / "MNIST/raw" / IDX[2]).unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, checksums=sums)
    assert str(tmp_path / "MNIST/raw" / IDX[2]) in one_line(err) and "download" in one_line(err)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    with pytest.raises(DataError, match="GENEFL_DATA"):
        load_dataset("mnist", None)


def cifar_batch(n, label_key, seed, classes):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[0, 1024] = 255  # first pixel of the green plane of image 0
    data[0, 0] = 0
    return pickle.dumps({b"data": data, label_key: [i % classes for i in range(n)]})


def write_cifar(root, name, n=4):
    """Random CIFAR-format batches of `n` images each under `root`; returns their md5 table."""
    if name == "cifar10":
        folder, files, key, classes = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        folder, files, key, classes = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        (folder / f).write_bytes(cifar_batch(n, key, i, classes))
    return {f"{folder.name}/{f}": md5_of(folder / f) for f in files}


@pytest.mark.parametrize("name, n_train, classes", [("cifar10", 20, 10), ("cifar100", 4, 100)])
def test_cifar_pickles_are_channels_first(tmp_path, name, n_train, classes):
    d = load_dataset(name, tmp_path, checksums=write_cifar(tmp_path, name))
    assert d.x_train.shape == (n_train, 3, 32, 32) and d.num_classes == classes
    mean, std = (0.4822, 0.2435) if name == "cifar10" else (0.4865, 0.2564)
    assert d.x_train[0, 1, 0, 0].item() == pytest.approx((1.0 - mean) / std, rel=1e-5)  # green plane, pixel (0, 0)


def test_corrupt_cifar_pickle(tmp_path):
    sums = write_cifar(tmp_path, "cifar10")
    bad = tmp_path / "cifar-10-batches-py/test_batch"
    bad.write_bytes(b"not a pickle at all")
    sums["cifar-10-batches-py/test_batch"] = md5_of(bad)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, checksums=sums)
    assert "test_batch" in one_line(err)


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_download_verification_places_only_good_files(tmp_path):
    archive = tmp_path / "a.tar.gz.part"
    make_tar(archive, {"cifar-10-batches-py/test_batch": b"x" * 10})
    good = md5_of(archive)
    target = tmp_path / "cifar-10-python.tar.gz"
    place_verified(archive, target, good)
    extract_tar(target, tmp_path / "out")
    assert (tmp_path / "out/cifar-10-batches-py/test_batch").read_bytes() == b"x" * 10
    make_tar(archive, {"y": b"y"})
    with pytest.raises(DataError, match="expected " + "f" * 32):
        place_verified(archive, tmp_path / "other.tar.gz", "f" * 32)
    assert not archive.exists() and not (tmp_path / "other.tar.gz").exists()


def test_unsafe_tar_member_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    make_tar(archive, {"../escape": b"boom"})
    with pytest.raises(DataError, match="unsafe member"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_real_mnist_and_fashion(shared_data):
    for name in ("mnist", "fashion_mnist"):
        d = load_dataset(name, shared_data)
        assert len(d.y_train) == 60000 and len(d.y_test) == 10000 and d.num_classes == 10
        assert sorted(d.y_train.unique().tolist()) == list(range(10))


def _replace(root, sums, index, payload: bytes, compress=True):
    """Swap one of the four IDX files for `payload`, with its md5 accepted (the checksum_file route)."""
    path = root / "MNIST/raw" / IDX[index]
    path.write_bytes(gzip.compress(payload) if compress else payload)
    sums[f"MNIST/raw/{IDX[index]}"] = md5_of(path)


BAD_FILES = [
    (0, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"garbage" * 10, False, "unreadable data file"),  # bad deflate
    (0, bytes([0, 0, 8, 0]), True, "IDX file of 0 dimensions"),
    (1, idx_bytes(np.full(20, 200)), True, "a label of 200"),
    (0, idx_bytes(np.zeros((20, 784))), True, "IDX file of 2 dimensions"),
    (2, idx_bytes(np.zeros((10, 1, 28, 28))), True, "IDX file of 4 dimensions"),
    (1, idx_bytes(np.arange(5) % 10), True, "20 images but 5 labels"),
    (0, idx_bytes(np.zeros((20, 8, 8))), True, "images of shape (1, 8, 8), expected (1, 28, 28)"),
]


@pytest.mark.parametrize("index, payload, compress, fragment", BAD_FILES)
def test_malformed_idx_files_are_one_line_errors(tmp_path, index, payload, compress, fragment):
    sums = write_mnist(tmp_path)
    _replace(tmp_path, sums, index, payload, compress)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, checksums=sums)
    assert fragment in one_line(err)


def test_a_folder_in_place_of_a_file_and_a_binary_checksum_file(tmp_path):
    from genefl.data.datasets import read_checksum_file

    sums = write_mnist(tmp_path)
    path = tmp_path / "MNIST/raw" / IDX[3]
    path.unlink()
    path.mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, checksums=sums)
    assert "is not a regular file" in one_line(err)
    binary = tmp_path / "sums.md5"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError) as err:
        read_checksum_file(binary)
    assert "not UTF-8" in one_line(err)
