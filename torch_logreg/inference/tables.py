"""Tables in statsmodels' layout: the fitted values as text (:class:`Summary`) and as labelled columns
(:class:`Table`). The results gather the numbers; the layout lives here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the width of a summary, statsmodels'
WIDTH = 78


@dataclass
class Summary:
    """A statsmodels-style text table; ``str(summary)`` or ``summary.as_text()`` prints it."""

    text: str
    tables: list[list[dict]] = field(default_factory=list)

    def as_text(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


@dataclass
class Table:
    """A small labelled table: ``values`` ``(rows, columns)``, the row labels ``index`` (strings, or tuples
    named by ``index_names``) and the column labels ``columns``, the names pandas uses, so that
    ``pandas.DataFrame(t.values, index=t.index, columns=t.columns)`` is the same table. ``t["name"]`` is
    a column, ``t[["a", "b"]]`` several; ``str(t)`` prints it."""

    values: np.ndarray
    index: list
    columns: list[str]
    index_names: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def __getitem__(self, key) -> np.ndarray:
        keys = [key] if isinstance(key, str) else list(key)
        missing = [k for k in keys if k not in self.columns]
        if missing:
            raise KeyError(f"no column {missing[0]!r}; the columns are {', '.join(self.columns)}")
        picked = self.values[:, [self.columns.index(k) for k in keys]]
        return picked[:, 0] if isinstance(key, str) else picked

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{column: values}``."""
        return {c: self.values[:, j] for j, c in enumerate(self.columns)}

    def __str__(self) -> str:
        labels = [" ".join(map(str, r)) if isinstance(r, tuple) else str(r) for r in self.index]
        width = max([len(x) for x in labels] + [1])
        cells = [[f"{v:.6g}" for v in row] for row in self.values]
        widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(self.columns)]
        lines = [" " * width + "".join(f"  {c:>{w}}" for c, w in zip(self.columns, widths, strict=True))]
        for label, row in zip(labels, cells, strict=True):
            lines.append(f"{label:<{width}}" + "".join(f"  {v:>{w}}" for v, w in zip(row, widths, strict=True)))
        return "\n".join(lines)


def fit_header(title: str, left: list[tuple[str, str]], right: list[tuple[str, str]]) -> list[str]:
    """The title of a fit's summary and its ``(label, value)`` pairs in two columns, as lines."""
    lines = [title.center(WIDTH), "=" * WIDTH]
    for i in range(max(len(left), len(right))):
        lk, lv = left[i] if i < len(left) else ("", "")
        rk, rv = right[i] if i < len(right) else ("", "")
        lines.append(f"{lk:<17}{lv:>21}   {rk:<18}{rv:>19}")
    return lines


def coefficient_summary(lines: list[str], names: list[str], blocks: list[tuple], what: str, alpha: float) -> Summary:
    """``lines`` (the header) followed by one table of coefficients per block, as a :class:`Summary`.

    Each block is ``(label, values, std_errors, zvalues, pvalues, conf_int)``, one entry per name
    (``conf_int`` ``(len(names), 2)``); ``label`` (or None) heads the block's columns, ``what`` names its
    values (``"coef"``, ``"dy/dx"``) and ``alpha`` its confidence level.
    """
    lo, hi = f"[{alpha / 2:.3f}", f"{1 - alpha / 2:.3f}]"
    tables = []
    for label, par, se, zv, pv, ci in blocks:
        lines.append("=" * WIDTH)
        lines.append(f"{label or '':<16}{what:>10}{'std err':>11}{'z':>10}{'P>|z|':>10}{lo:>11}{hi:>10}")
        lines.append("-" * WIDTH)
        tables.append(coef_rows(lines, names, par, se, zv, pv, ci, what))
    lines.append("=" * WIDTH)
    return Summary("\n".join(lines), tables)


def coef_rows(lines: list[str], names: list[str], par, se, zv, pv, ci, what: str) -> list[dict]:
    """Append one formatted row per name to ``lines``; return the rows as dicts."""
    rows = []
    for j, name in enumerate(names):
        rows.append({"name": name, what: par[j], "std err": se[j], "z": zv[j], "P>|z|": pv[j],
                     "lower": ci[j, 0], "upper": ci[j, 1]})
        lines.append(
            f"{name[:15]:<16}{format_number(par[j]):>10}{format_number(se[j]):>11}{zv[j]:>10.3f}{pv[j]:>10.3f}"
            f"{format_number(ci[j, 0]):>11}{format_number(ci[j, 1]):>10}"
        )
    return rows


def format_number(v: float) -> str:
    """Four decimals, or four significant digits (``%.4g``) at ``|v| >= 1e4`` or ``0 < |v| < 1e-3``."""
    return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"
