"""Linear restrictions written as text, ``"GPA = TUCE = 0"``, read into the ``(R, q)`` of :mod:`.constraints`."""

from __future__ import annotations

import re
from typing import NoReturn

import numpy as np

from ..errors import UsageError
from .constraints import linear_constraints

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\s=+\-*/(),]+")


def parse_constraints(text: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(R, q)`` of the restrictions in ``text`` over the parameters ``names``.

    Grammar: ``restrictions := restriction ("," restriction)*``; ``restriction := chain | "(" chain ")"``;
    ``chain := expr ("=" expr)*`` (``a = b = c`` is ``a - b = 0, b - c = 0``; a lone ``expr`` is
    ``expr = 0``); ``expr := ["+" | "-"] term (("+" | "-") term)*``; ``term := factor (("*" | "/")
    factor)*`` with at most one factor holding a parameter and only constants as divisors;
    ``factor := number | name | "(" expr ")"``. Names are matched longest first, before numbers.
    """
    tokens = _tokenize(text, names)
    n = len(names)
    pos = 0

    def fail(what: str) -> NoReturn:
        raise UsageError(f"cannot read the restrictions {text!r}: {what}")

    def peek():
        return tokens[pos] if pos < len(tokens) else ("end", None)

    def take(op: str) -> bool:
        nonlocal pos
        if peek() == ("op", op):
            pos += 1
            return True
        return False

    def factor() -> tuple[np.ndarray, float]:
        nonlocal pos
        kind, value = peek()
        pos += 1
        if kind == "name":
            v = np.zeros(n)
            v[value] = 1.0
            return v, 0.0
        if kind == "num":
            return np.zeros(n), value
        if (kind, value) == ("op", "("):
            out = expr()
            if not take(")"):
                fail("a parenthesis is not closed")
            return out
        fail("it ends too early" if kind == "end" else f"unexpected {value!r}")

    def term() -> tuple[np.ndarray, float]:
        v, c = factor()
        while peek() in (("op", "*"), ("op", "/")):
            divide = peek()[1] == "/"
            take(peek()[1])
            v2, c2 = factor()
            if divide:
                if v2.any() or c2 == 0:
                    fail("only division by a non-zero constant is linear")
                v, c = v / c2, c / c2
            elif v.any() and v2.any():
                fail("a product of two parameters is not linear")
            else:
                v, c = (v * c2, c * c2) if v.any() else (v2 * c, c * c2)
        return v, c

    def expr() -> tuple[np.ndarray, float]:
        sign = -1.0 if take("-") else 1.0
        if sign > 0:
            take("+")
        v, c = term()
        v, c = sign * v, sign * c
        while peek() in (("op", "+"), ("op", "-")):
            sign = -1.0 if peek()[1] == "-" else 1.0
            take(peek()[1])
            v2, c2 = term()
            v, c = v + sign * v2, c + sign * c2
        return v, c

    def chain() -> list[tuple[np.ndarray, float]]:
        sides = [expr()]
        while take("="):
            sides.append(expr())
        if len(sides) == 1:
            sides.append((np.zeros(n), 0.0))
        # a = b  <=>  (v_a - v_b) theta = c_b - c_a
        return [(va - vb, cb - ca) for (va, ca), (vb, cb) in zip(sides, sides[1:], strict=False)]

    def restriction() -> list[tuple[np.ndarray, float]]:
        nonlocal pos
        if peek() == ("op", "("):
            depth, j = 0, pos
            while j < len(tokens):  # a parenthesised restriction holds "=" at its own depth
                depth += {("op", "("): 1, ("op", ")"): -1}.get(tokens[j], 0)  # type: ignore[arg-type]
                if depth == 0:
                    break
                if depth == 1 and tokens[j] == ("op", "="):
                    pos += 1
                    rows = chain()
                    if not take(")"):
                        fail("a parenthesis is not closed")
                    return rows
                j += 1
        return chain()

    rows = restriction()
    while take(","):
        rows += restriction()
    if pos != len(tokens):
        fail(f"unexpected {tokens[pos][1]!r}")
    return np.array([v for v, _ in rows]), np.array([c for _, c in rows])


def _tokenize(text: str, names: list[str]) -> list[tuple[str, object]]:
    """``("name", index)``, ``("num", value)`` and ``("op", char)`` tokens of ``text``."""
    by_length = sorted(range(len(names)), key=lambda i: -len(names[i]))
    tokens: list[tuple[str, object]] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        for j in by_length:
            end = i + len(names[j])
            # a name must not be the start of a longer word
            if text.startswith(names[j], i) and not (end < len(text) and _joins(names[j][-1], text[end])):
                tokens.append(("name", j))
                i = end
                break
        else:
            number = _NUMBER.match(text, i)
            word = _WORD.match(text, i)
            if number and (word is None or word.end() <= number.end()):
                tokens.append(("num", float(number.group())))
                i = number.end()
            elif text[i] in "=+-*/(),":
                tokens.append(("op", text[i]))
                i += 1
            else:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise UsageError(f"cannot read the restrictions {text!r}: {word.group()!r} "  # type: ignore[union-attr]
                                 f"is not a parameter name ({shown})")
    return tokens


def _joins(last: str, nxt: str) -> bool:
    return (last.isalnum() or last == "_") and (nxt.isalnum() or nxt in "_.")


def read_constraints(R, q, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(R, q)`` of restrictions on the parameters ``names`` given in any of statsmodels' forms: a
    string (:func:`parse_constraints`, which states its constants itself, so ``q`` must be None), or a
    matrix ``R`` with ``q``, or the pair ``(R, q)`` (:func:`~.constraints.linear_constraints`)."""
    if isinstance(R, str):
        if q is not None:
            raise UsageError("wald_test takes q only with a matrix R: a string states its constants itself")
        return parse_constraints(R, names)
    return linear_constraints(R, q, len(names))
