"""How a step was chosen: the :class:`Selection` every step the selector returns carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Selection:
    """How a step was chosen: ``step`` (a name of ``registry.STEPS``), ``source`` ("rule" or
    "forced"), ``reason`` (why, where the rule's row does not say it all: a run too short for the
    kernels, weighted mini-batches) and ``rule`` (the row of ``select.RULE`` that decided, in words)."""

    step: str
    source: str
    reason: str = ""
    rule: str = ""

    def describe(self) -> str:
        """``"fused (rule; rule row 7: CPU, one sigmoid ...)"`` or ``"reference (forced)"``, with the
        reason after another semicolon where there is one."""
        return f"{self.step} ({'; '.join(p for p in (self.source, self.rule, self.reason) if p)})"


def format_seconds(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s >= 1e-4 else f"{s * 1e6:.1f} us"
