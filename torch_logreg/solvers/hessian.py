"""The memory Newton's dense Hessian takes, and the check that it fits before a solve starts.

For one sigmoid or identity output the Hessian is one Gram product ``x~^T diag(s) x~`` per output
(:func:`~torch_logreg.functional.block_diagonal_hessian`, formed by
:func:`~torch_logreg.functional.gram` in torch's BLAS, or by :mod:`.hessian_rows` where the rule
takes the kernels), ``(A, A)`` each; for a softmax one ``(K A, K A)`` matrix.
"""

from __future__ import annotations


def dense_hessian_bytes(n_features: int, n_outputs: int, bias: bool = True, softmax: bool = False,
                        itemsize: int = 8) -> int:
    """The bytes Newton's dense Hessian takes with one copy for its factorisation: ``2 K A^2``
    entries for one sigmoid or identity output per class (``K`` blocks ``(A, A)``), ``2 (K A)^2``
    for a softmax (the full matrix), ``A = n_features + bias``, of ``itemsize`` bytes each."""
    a = n_features + int(bias)
    entries = (n_outputs * a) ** 2 if softmax else n_outputs * a * a
    return 2 * entries * itemsize


def check_dense_hessian(n_features: int, n_outputs: int, bias: bool = True, softmax: bool = False,
                        itemsize: int = 8, device=None, setting: str = "solver") -> None:
    """A :class:`~torch_logreg.memory.MemoryBoundError` when Newton's dense Hessian for this shape
    (:func:`dense_hessian_bytes`) exceeds the device's memory (:func:`torch_logreg.memory.check`);
    ``setting`` names the option that chose newton in the message."""
    from .. import memory

    need = dense_hessian_bytes(n_features, n_outputs, bias, softmax, itemsize)
    memory.check(need, f"{setting} = 'newton' on {n_features:,} features ({n_outputs} output(s)) forms a dense "
                       "Hessian that", f"use {setting} = 'lbfgs', 'proximal' or 'cd', which need no Hessian, or "
                                      "fewer features", device)


def dense_hessian_fits(n_features: int, n_outputs: int, bias: bool = True, softmax: bool = False,
                       itemsize: int = 8, device=None) -> bool:
    """Whether :func:`check_dense_hessian` passes (what ``solver="auto"`` asks before newton)."""
    from .. import memory

    return dense_hessian_bytes(n_features, n_outputs, bias, softmax, itemsize) <= memory.device_memory(device)
