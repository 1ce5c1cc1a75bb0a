"""Datasets, partitions and the dynamic scenario. `from_arrays` turns your own arrays into a
dataset that `genefl.run(config, dataset=...)` partitions and schedules like the built-in ones."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .datasets import Dataset, check_split


def from_arrays(x_train, y_train, x_test, y_test, name: str = "custom", num_classes: int | None = None) -> Dataset:
    """A dataset from N x C x H x W float arrays (already normalised) and integer labels 0..K-1
    (numpy arrays or tensors). `num_classes` defaults to the largest label + 1."""
    arrays = []
    for what, value in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
        try:
            arrays.append(np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value))
        except (TypeError, ValueError) as exc:
            raise DataError(f"from_arrays: {what} is not an array ({exc})") from None
    xtr, ytr, xte, yte = arrays
    for what, labels in (("y_train", ytr), ("y_test", yte)):
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"from_arrays: {what} must hold integer labels, got {labels.dtype}")
    classes = num_classes if num_classes is not None else int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
    check_split(name, "x_train/y_train", xtr, ytr, classes, None)
    check_split(name, "x_test/y_test", xte, yte, classes, tuple(xtr.shape[1:]))
    for what, x in (("x_train", xtr), ("x_test", xte)):
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise DataError(f"from_arrays: {what} must be finite floats, got {x.dtype}")
    as_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    as_y = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return Dataset(name, as_x(xtr), as_y(ytr), as_x(xte), as_y(yte), classes)


__all__ = ["Dataset", "from_arrays"]
