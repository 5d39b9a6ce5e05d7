"""Input checks with messages that name the problem and the offending value or position.

These checks read values back from the device, so they run once, when data enters a model or a
run, never inside the per-step path.

Sparse features (``scipy.sparse`` CSR/CSC/COO/... matrices and arrays, torch sparse COO/CSR/CSC
tensors) enter here too: :func:`as_tensor` turns them into a torch sparse CSR tensor (int64
indices, duplicates summed) without densifying, and the checks read their stored ``values()``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from .errors import UsageError


def is_sparse(data) -> bool:
    """True for a torch sparse tensor (any layout but strided) and for a ``scipy.sparse`` matrix or
    array (told by its module, so scipy is not imported to ask)."""
    if isinstance(data, Tensor):
        return data.layout != torch.strided
    return type(data).__module__.startswith("scipy.sparse")


def as_sparse_csr(
    data, name: str, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> Tensor:
    """A scipy sparse matrix/array or a torch sparse tensor as a 2-D torch sparse CSR tensor with
    int64 ``crow_indices`` / ``col_indices`` (no copy of the values when they are already such a
    tensor of the right dtype and device; never densified)."""
    shape = tuple(data.shape)
    if len(shape) != 2:
        raise UsageError(f"{name} must be 2-D (n_samples, n_features), got a sparse {name} of shape {shape}")
    if isinstance(data, Tensor):
        if data.layout == torch.sparse_coo:
            data = data.coalesce()
        csr = data if data.layout == torch.sparse_csr else data.to_sparse_csr()
        crow, col, values = csr.crow_indices(), csr.col_indices(), csr.values()
    else:
        matrix = data.tocsr()
        if not matrix.has_canonical_format:  # duplicates or unsorted columns: summed and sorted on a copy
            matrix = matrix.copy() if matrix is data else matrix
            matrix.sum_duplicates()
        if matrix.dtype == object or matrix.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got a sparse matrix of dtype {matrix.dtype}")
        crow, col = torch.from_numpy(matrix.indptr), torch.from_numpy(matrix.indices)
        values = torch.from_numpy(np.ascontiguousarray(matrix.data))
    if crow.dtype != torch.int64:
        crow, col = crow.to(torch.int64), col.to(torch.int64)
    with warnings.catch_warnings():  # torch's once-per-process notice that its CSR support is in beta
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        tensor = torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=True)
    if dtype is not None or device is not None:
        tensor = tensor.to(device=device, dtype=dtype)
    return tensor


def as_tensor(
    data, name: str, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> Tensor:
    """Turn an array-like into a tensor (no copy when it already is one of the right kind); sparse
    data becomes a torch sparse CSR tensor (:func:`as_sparse_csr`)."""
    if is_sparse(data):
        return as_sparse_csr(data, name, dtype, device)
    if isinstance(data, Tensor):
        tensor = data
    else:
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array or tensor, got {type(data).__name__}") from exc
        if array.dtype == object or array.dtype.kind in "USV":
            raise TypeError(f"{name} must be numeric, got an array of dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype is not None or device is not None:
        tensor = tensor.to(device=device, dtype=dtype)
    return tensor


def sample_weights(sample_weight, n: int, dtype: torch.dtype, device) -> Tensor | None:
    """``sample_weight`` as ``(N,)`` finite, non-negative weights with a positive sum (a scalar is
    every row's weight); None passes. The one check of sample weights, for the loop and the solvers."""
    if sample_weight is None:
        return None
    w = as_tensor(sample_weight, "sample_weight", dtype=dtype, device=device)
    if w.dim() == 0:
        w = w.expand(n).clone()
    if w.dim() != 1 or w.shape[0] != n:
        raise UsageError(f"sample_weight must have shape ({n},), got {tuple(w.shape)}")
    where = first_nonfinite(w)
    if where is not None:
        raise UsageError(f"sample_weight contains a non-finite value at sample {where[0]}")
    if bool((w < 0).any()):
        i = int((w < 0).nonzero()[0, 0])
        raise UsageError(f"sample_weight must be non-negative, got {w[i].item()!r} at sample {i}")
    if not bool((w > 0).any()):
        raise UsageError("sample_weight sums to zero: at least one sample needs a positive weight")
    return w


def check_weighted_classes(y_index, weight, classes: list, what: str = "sample_weight and class_weight") -> None:
    """At least two classes with a positive total weight (a classifier fitted on one class's weight
    alone learns nothing of the others); ``y_index`` (N,) class indices, ``weight`` (N,) the rows'
    weights, ``classes`` the names, ``what`` the weights' source in the message."""
    y = np.asarray(y_index.cpu() if isinstance(y_index, Tensor) else y_index).astype(np.int64)
    w = np.asarray(weight.cpu() if isinstance(weight, Tensor) else weight, dtype=np.float64)
    per_class = np.bincount(y, weights=w, minlength=len(classes))
    if (per_class > 0).sum() < 2:
        raise UsageError(f"after {what} only one class has a positive total weight (classes {list(classes)}, weights "
                         f"{per_class.tolist()}); at least 2 classes are needed")


def first_nonfinite(x: Tensor) -> tuple[int, ...] | None:
    """Index of the first NaN or infinite entry, or None when all are finite."""
    # One read: any NaN or infinity makes the sum non-finite, so a finite sum proves all entries
    # finite. Only when it is not (a bad entry, or an overflowing sum) is the position searched.
    # (The sum stays in x's dtype: a float64 accumulation of float32 data is several times slower.)
    if x.is_floating_point() and bool(torch.isfinite(x.sum())):
        return None
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def check_features(x: Tensor, n_features: int | None = None, name: str = "X") -> None:
    """``x`` must be a floating ``(N, D)`` tensor with N >= 1, finite values, D == n_features."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise UsageError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise UsageError(f"{name} is empty: it has 0 samples (shape {tuple(x.shape)})")
    if n_features is not None and x.shape[1] != n_features:
        raise UsageError(
            f"{name} has {x.shape[1]} features but the model expects {n_features} "
            f"(shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.layout != torch.strided:
        if x.layout != torch.sparse_csr:
            raise UsageError(f"{name} is a sparse tensor of layout {x.layout}; pass it through as_tensor (CSR)")
        where = first_nonfinite(x.values())
        if where is not None:
            k = where[0]
            row = int(torch.searchsorted(x.crow_indices(), k, right=True)) - 1
            raise UsageError(
                f"{name} contains a non-finite value {x.values()[k].item()} at row {row}, "
                f"column {int(x.col_indices()[k])}"
            )
    elif x.device.type != "meta":
        where = first_nonfinite(x)
        if where is not None:
            raise UsageError(
                f"{name} contains a non-finite value {x[where].item()} at row {where[0]}, "
                f"column {where[1]}"
            )


def check_square_range(x: Tensor, dtype: torch.dtype | None = None, name: str = "X") -> None:
    """Every column's largest square must be finite in ``dtype`` (``x``'s own by default).

    Second-order quantities are sums over the rows of products of two columns: the Hessian
    ``X~^T S X~`` of Newton and of the inference (``S`` the per-row curvature, at most 1, times the
    sample weight, divided by N), L-BFGS's curvature pairs ``y^T y``. An entry is bounded by
    ``max|x_i| max|x_j|`` times the mean weight, so it stays finite while the squares do; a column
    whose square overflows makes it infinite and the linear algebra fails (LAPACK refuses such
    input). Checked on ``x`` as given, before any conversion to ``dtype``, so the message shows the
    values the caller passed. Non-finite entries are left to :func:`check_features`.
    """
    if x.dim() != 2 or x.numel() == 0 or x.dtype == torch.bool or x.is_complex() or x.device.type == "meta":
        return
    dtype = dtype if dtype is not None else x.dtype
    if not dtype.is_floating_point:
        return
    limit = math.sqrt(torch.finfo(dtype).max)
    sparse = x.layout == torch.sparse_csr
    values = x.values() if sparse else x  # a sparse X's stored values (an absent entry is a zero)
    if values.numel() == 0:
        return
    # one pass over the values first (their smallest and largest: several times faster than the
    # column-wise reductions); the columns only where that finds a value too large
    low, high = torch.aminmax(values)
    if max(-low.item(), high.item()) <= limit:  # False for a NaN, which the columns then look at
        return
    if sparse:
        col_max = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device).scatter_reduce_(
            0, x.col_indices(), values.abs().to(torch.float64), "amax")
    else:
        col_max = torch.maximum(x.amax(dim=0), -x.amin(dim=0)).to(torch.float64)  # max |x| per column, no copy of x
    bad = (col_max > limit) & torch.isfinite(col_max)
    if not bool(bad.any()):
        return
    cols = bad.nonzero()[:, 0].tolist()
    j = cols[0]
    dtype_name = str(dtype).replace("torch.", "")
    which, remedy = f"{name} column {j}", "rescale the column"
    if len(cols) > 1:
        which += f" (and {len(cols) - 1} more column{'s' if len(cols) > 2 else ''})"
        remedy = "rescale those columns"
    if dtype != torch.float64:
        remedy += " or pass dtype='float64'"
    raise UsageError(
        f"{which} has values of magnitude up to {col_max[j].item():.3g}, whose squares overflow {dtype_name}; {remedy}"
    )


def check_same_placement(model_param: Tensor, **tensors: Tensor) -> None:
    """Every tensor must share the model's device and dtype (floating tensors only for dtype)."""
    for name, t in tensors.items():
        if t.device != model_param.device:
            raise UsageError(
                f"{name} is on device {t.device} but the model is on {model_param.device}; "
                f"move it with .to({str(model_param.device)!r})"
            )
        if t.is_floating_point() and t.dtype != model_param.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but the model's parameters are {model_param.dtype}; "
                f"convert one of them so both match"
            )


def _first_where(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def binary_targets(y: Tensor, n_samples: int, n_outputs: int, dtype: torch.dtype) -> Tensor:
    """Targets of K independent sigmoids -> ``(N, K)`` float tensor of zeros and ones."""
    t = _reshape_targets(y, n_samples, n_outputs)
    t = t.to(dtype)
    if t.device.type != "meta":
        where = first_nonfinite(t)
        if where is not None:
            raise UsageError(f"y contains a non-finite value at position {where}")
        bad = (t != 0) & (t != 1)
        if bool(bad.any()):
            pos = _first_where(bad)
            raise UsageError(
                f"binary targets must be 0 or 1, got {t[pos].item()!r} at "
                f"{_describe(pos, n_outputs)}"
            )
    return t


def class_targets(y: Tensor, n_samples: int, n_classes: int, dtype: torch.dtype) -> Tensor:
    """Class indices ``(N,)`` in [0, K) or one-hot / probability rows ``(N, K)`` -> ``(N, K)``."""
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() == 1:
        if y.shape[0] != n_samples:
            raise UsageError(f"y has {y.shape[0]} entries but X has {n_samples} samples")
        if y.is_floating_point():
            where = first_nonfinite(y)
            if where is not None:
                raise UsageError(f"y contains a non-finite value at sample {where[0]}")
            frac = y != torch.round(y)
            if bool(frac.any()):
                i = _first_where(frac)[0]
                raise UsageError(f"class indices must be integers, got {y[i].item()!r} at sample {i}")
        idx = y.to(torch.int64)
        bad = (idx < 0) | (idx >= n_classes)
        if bool(bad.any()):
            i = _first_where(bad)[0]
            raise UsageError(
                f"class index {int(idx[i])} at sample {i} is outside [0, {n_classes}) "
                f"for a model with {n_classes} classes"
            )
        t = torch.zeros(n_samples, n_classes, dtype=dtype, device=y.device)
        t.scatter_(1, idx[:, None], 1.0)
        return t
    t = _reshape_targets(y, n_samples, n_classes).to(dtype)
    where = first_nonfinite(t)
    if where is not None:
        raise UsageError(f"y contains a non-finite value at position {where}")
    if bool((t < 0).any()):
        pos = _first_where(t < 0)
        raise UsageError(f"one-hot targets must be non-negative, got {t[pos].item()!r} at {_describe(pos, n_classes)}")
    off = (t.sum(dim=1) - 1).abs() > 1e-6
    if bool(off.any()):
        i = _first_where(off)[0]
        raise UsageError(f"one-hot target rows must sum to 1, row {i} sums to {t[i].sum().item()!r}")
    return t


def real_targets(y: Tensor, n_samples: int, n_outputs: int, dtype: torch.dtype) -> Tensor:
    """Regression targets ``(N,)`` or ``(N, K)`` -> finite ``(N, K)`` float tensor."""
    t = _reshape_targets(y, n_samples, n_outputs).to(dtype)
    where = first_nonfinite(t)
    if where is not None:
        raise UsageError(f"y contains a non-finite value at {_describe(where, n_outputs)}")
    return t


def _reshape_targets(y: Tensor, n_samples: int, n_outputs: int) -> Tensor:
    if y.dim() == 1 and n_outputs == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape[1] != n_outputs:
        expected = f"({n_samples},) or ({n_samples}, 1)" if n_outputs == 1 else f"({n_samples}, {n_outputs})"
        raise UsageError(f"y has shape {tuple(y.shape)} but the model expects {expected}")
    if y.shape[0] != n_samples:
        raise UsageError(f"y has {y.shape[0]} samples but X has {n_samples}")
    return y


def _describe(pos: tuple[int, ...], n_outputs: int) -> str:
    if len(pos) == 1 or n_outputs == 1:
        return f"sample {pos[0]}"
    return f"sample {pos[0]}, output {pos[1]}"
