"""Datasets, partitions and the dynamic scenario. `from_arrays` turns your own arrays into a
dataset that `genefl.run(config, dataset=...)` partitions and schedules like the built-in ones."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import DataError
from .datasets import MAX_CLASSES, Dataset, check_dataset


def _array(what: str, value) -> np.ndarray:
    try:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"from_arrays: {what} is not an array ({type(exc).__name__})") from None
    if array.dtype == object:
        raise DataError(f"from_arrays: {what} is not an array of numbers (ragged or mixed values)")
    return array


def from_arrays(x_train, y_train, x_test, y_test, name: str = "custom", num_classes: int | None = None) -> Dataset:
    """A dataset from N x C x H x W float arrays (already normalised) and integer labels 0..K-1
    (numpy arrays or tensors). `num_classes` defaults to the largest label + 1. Images are checked
    finite as the float32 they become (1e300 would be inf), labels in range, 2 <= K <= 100,000."""
    xtr, ytr, xte, yte = (_array(w, v) for w, v in (("x_train", x_train), ("y_train", y_train),
                                                  ("x_test", x_test), ("y_test", y_test)))
    for what, labels in (("y_train", ytr), ("y_test", yte)):
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"from_arrays: {what} must hold integer labels, got {labels.dtype}")
    for what, x in (("x_train", xtr), ("x_test", xte)):
        if x.size and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"from_arrays: {what} must hold floats, got {x.dtype}")
    if num_classes is None:
        top = max((int(y.max()) for y in (ytr, yte) if y.size), default=0)
        num_classes = min(top, MAX_CLASSES) + 1
    elif isinstance(num_classes, np.integer):
        num_classes = int(num_classes)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise DataError(f"from_arrays: num_classes must be an integer, got {type(num_classes).__name__} {str(num_classes)[:40]}")
    with warnings.catch_warnings():  # a value beyond float32's range becomes inf: refused below
        warnings.simplefilter("ignore", RuntimeWarning)
        as_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        xs = as_x(xtr), as_x(xte)
    ys = []
    for what, y in (("y_train", ytr), ("y_test", yte)):
        if y.size and (y.min() < np.iinfo(np.int64).min or y.max() > np.iinfo(np.int64).max):
            raise DataError(f"from_arrays: {what} holds labels beyond int64")
        ys.append(torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))
    data = Dataset(name, xs[0], ys[0], xs[1], ys[1], num_classes)
    check_dataset(data)
    return data


__all__ = ["Dataset", "from_arrays"]
