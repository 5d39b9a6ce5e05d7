"""The benchmark suite: one table of medians and ratios, everything measured in this process.

    python benchmarks/run.py [--quick] [--json out.json] [--device cpu|cuda]

The header names the machine: CPU model, SIMD level (``torch.backends.cpu.get_cpu_capability()``),
the BLAS torch was built with, torch and the device. The loop runs with ``step="rule"``, the
library's default: the fixed rule table's step for a long run. Each case prints the step chosen
and the row of the rule that decided.

Sections (see benchmarks/README.md for what each row means):

* ``binary``: N x 100 float32 logistic regression, full batch: the bandwidth floor, the bare
  hand-written step, the autograd + torch.optim step, the loop per epoch (``Trainer.run``) and
  ``fit`` per epoch (setup included), and scikit-learn's ``SGDClassifier.partial_fit`` per epoch;
* ``binary mb``: the same data in mini-batches of 64..1024, loop per epoch vs autograd per epoch;
* ``softmax``: 60,000 x 784 x 10 (an MNIST-sized problem), full batch and mini-batches;
* ``exact``: scikit-learn ``LogisticRegression(solver="lbfgs")`` against the project's exact
  solvers (``fit_exact`` with newton and lbfgs) stopped once they reach the same objective, and
  L1 on a sparse N x 100,000 matrix: scikit-learn's saga against ``fit_exact(solver="proximal")``;
* ``sparse``: a hashed-feature-sized CSR matrix (500,000 x 2^20, 40 stored a row; smaller with
  --quick): the loop's sparse epoch against one read of the CSR arrays and against autograd,
  and scikit-learn's lbfgs and saga against ``fit_exact(lbfgs)`` on the same matrix;
* ``out-of-core``: mini-batch epochs streamed from a memory-mapped ``.npy`` (budget a tenth
  of the file) against the same epochs from memory;
* ``scaling``: time per epoch vs N (1e4 .. 1e7; 2e5 with --quick) with fitted log-log slopes;
* ``tiny``: 100 x 10, where fixed per-call overheads dominate: fit per step vs autograd;
* ``fresh``: a script's first fit, each in a fresh interpreter (``fresh.py``; CPU): one-time
  costs included (numba's load, layout copies), against autograd's first fit;
* ``fits``: what a user meets (``fits.py``; CPU): the first fit in a fresh interpreter and five
  fits in one, E = 20 (binary 1e6 x 100, softmax 60,000 x 784 x 10; and B = 64 mini-batches, E = 2),
  the default step and the torch path against the same autograd loop, from just before the call
  to just after.

Every section but ``fresh`` and ``fits`` measures a process in which numba is loaded (it is loaded up front,
and the load's time printed): their figures are per step once the one-time costs are paid.

Ratios are ``other / this``: above 1 means the row's method is faster than the one it is
compared with.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

from common import (
    STEP,
    AutogradReference,
    Case,
    Timing,
    auto_inner,
    describe_machine,
    fit_cases,
    fit_trainer,
    format_seconds,
    hand_model,
    hand_step,
    machine_info,
    make_binary,
    make_multiclass,
    max_weight_difference,
    measure_interleaved,
    resolve_bench_device,
)

LR = 0.5


class Table:
    """Rows of (section, case, timing, x floor, compared-with, ratio), and the step the selector
    chose for each case."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.extra: dict = {"selector": []}

    def chose(self, section: str, case: str, selection) -> None:
        """Print and keep the step the loop's selector chose for a case."""
        if selection is None:
            return
        self.extra["selector"].append({"section": section, "case": case, "step": selection.step,
                                       "source": selection.source, "rule": selection.rule,
                                       "reason": selection.reason})
        print(f"step [{section}] {case}: {selection.describe()}", flush=True)

    def add(self, section: str, case: str, t: Timing | None, *, floor: Timing | None = None,
            vs: str = "", other: Timing | float | None = None, note: str = "") -> None:
        other_s = other.median if isinstance(other, Timing) else other
        self.rows.append({
            "section": section,
            "case": case,
            "median_s": None if t is None else t.median,
            "repeats": None if t is None else t.repeats,
            "inner": None if t is None else t.inner,
            "x_floor": None if (t is None or floor is None) else t.median / floor.median,
            "vs": vs,
            "ratio": None if (t is None or other_s is None) else other_s / t.median,
            "note": note,
        })
        print(f"  [{section}] {case}: " + ("skipped" if t is None else t.label()) + (f"  ({note})" if note else ""),
              file=sys.stderr, flush=True)

    def render(self) -> str:
        head = ("section", "case", "median (samples)", "x floor", "ratio (vs / this)", "note")
        body = []
        for r in self.rows:
            if r["median_s"] is None:
                med = "skipped"
            else:
                inner = f"x{r['inner']}" if r["inner"] and r["inner"] > 1 else ""
                med = f"{format_seconds(r['median_s'])} (n={r['repeats']}{inner})"
            xf = "" if r["x_floor"] is None else f"{r['x_floor']:.2f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f} vs {r['vs']}"
            body.append((r["section"], r["case"], med, xf, ratio, r["note"]))
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
        line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(b) for b in body]
        return "\n".join(out)


# --- sections ----------------------------------------------------------------------------------


def full_batch(table: Table, section: str, X, y, k: int, device, repeats: int, epochs: int) -> Timing:
    """Floor, bare step, autograd step, loop per epoch and fit per epoch on one problem."""
    n, d = X.shape
    dtype = X.dtype
    model = hand_model(d, k, device=device, dtype=dtype)
    T = model.targets(y, n)
    ref = AutogradReference(d, k, lr=LR, device=device, dtype=dtype)
    t_ref = ref.targets(y)
    hand_step(model, X, T, LR)()
    ref.step(X, t_ref)
    diff = max_weight_difference(model, ref)

    trainer = fit_trainer(hand_model(d, k, device=device, dtype=dtype), X, y, epochs=1, lr=LR,
                          device=device, dtype=dtype)

    def run_epochs():
        trainer.epochs += epochs
        trainer.run()

    step = hand_step(model, X, T, LR)
    fast = hand_step(model, X, T, LR, fast=True)
    table.chose(section, f"full batch {n:,} x {d} x {k} {str(dtype).removeprefix('torch.')}", fast.selection)
    auto = lambda: ref.step(X, t_ref)  # noqa: E731
    small = n * d < 10**6
    cases = {
        "floor": Case(lambda: X.sum()),
        "hand": Case(step, inner=auto_inner(step, device) if small else 1),
        "fast": Case(fast, inner=auto_inner(fast, device) if small else 1),
        "auto": Case(auto, inner=auto_inner(auto, device) if small else 1),
        "run": Case(run_epochs, per=epochs),
        "fit": fit_cases(d, k, X, y, epochs=epochs, lr=LR, device=device, dtype=dtype)["fit"],
    }
    t = measure_interleaved(cases, device=device, repeats=repeats, warmup=1)
    floor = t["floor"]
    table.add(section, "bandwidth floor: X.sum()", floor, floor=floor)
    table.add(section, "hand-written step, reference path", t["hand"], floor=floor, vs="autograd", other=t["auto"],
              note=f"|w - w_autograd| = {diff:.0e}")
    table.add(section, f"hand-written step, loop's fast path ({fast.path})", t["fast"], floor=floor, vs="autograd",
              other=t["auto"])
    table.add(section, "autograd + torch.optim.SGD step", t["auto"], floor=floor)
    table.add(section, f"Trainer.run per epoch (E={epochs})", t["run"], floor=floor, vs="autograd", other=t["auto"])
    table.add(section, f"fit per epoch, setup included (E={epochs})", t["fit"], floor=floor, vs="autograd",
              other=t["auto"])
    return floor


def sklearn_sgd(table: Table, section: str, X, y, floor: Timing, hand_epoch: float | None, repeats: int) -> None:
    """SGDClassifier.partial_fit: one pass of per-sample SGD over the data."""
    try:
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        table.add(section, "sklearn SGDClassifier.partial_fit per epoch", None, note="scikit-learn not installed")
        return
    Xn = np.ascontiguousarray(X.cpu().double().numpy())  # float64 up front: no conversion per call
    yn = y.cpu().numpy().astype(np.int64)
    classes = np.unique(yn)

    def make():
        return SGDClassifier(loss="log_loss", alpha=1e-6, learning_rate="constant", eta0=0.01, shuffle=False,
                             random_state=0)

    t = measure_interleaved({"sgd": Case(lambda c: c.partial_fit(Xn, yn, classes=classes), setup=make)},
                            repeats=repeats, warmup=1)["sgd"]
    table.add(section, "sklearn SGDClassifier.partial_fit per epoch (B=1)", t, floor=floor,
              note="float64 numpy")
    if hand_epoch is not None:
        table.rows[-1]["vs"], table.rows[-1]["ratio"] = "Trainer.run", hand_epoch / t.median


def mini_batches(table: Table, section: str, X, y, k: int, device, sizes, repeats: int) -> None:
    """Loop per epoch (mini-batches from a fresh permutation) vs the same with autograd."""
    n, d = X.shape
    for b in sizes:
        trainer = fit_trainer(hand_model(d, k, device=device, dtype=X.dtype), X, y, epochs=1, lr=0.05,
                              batch_size=b, device=device, dtype=X.dtype)
        table.chose(section, f"B={b}, {d} x {k}", trainer.stepper.selection)
        trainer.run()
        ref = AutogradReference(d, k, lr=0.05, device=device, dtype=X.dtype)
        t_ref = ref.targets(y)
        gen = torch.Generator(device=device).manual_seed(0)

        def run_epoch(trainer=trainer):
            trainer.epochs += 1
            trainer.run()

        t = measure_interleaved(
            {"hand": Case(run_epoch), "auto": Case(lambda ref=ref, t_ref=t_ref, gen=gen, b=b: ref.epoch(X, t_ref, b, gen))},
            device=device, repeats=repeats, warmup=0,
        )
        steps = math.ceil(n / b)
        table.add(section, f"Trainer.run per epoch, B={b} ({steps} steps)", t["hand"], vs="autograd", other=t["auto"])
        table.add(section, f"autograd per epoch, B={b}", t["auto"])


def exact_solvers(table: Table, X, y, l2: float, repeats: int) -> None:
    """scikit-learn lbfgs to its optimum vs the project's exact solvers to the same objective."""
    section = "exact"
    from sklearn.linear_model import LogisticRegression as SkLogReg

    n, d = X.shape
    Xn = np.ascontiguousarray(X.cpu().double().numpy())
    yn = y.cpu().numpy().astype(np.int64)
    C = 1.0 / (l2 * n)
    sk_holder = {}

    def sk_fit():
        sk_holder["m"] = SkLogReg(C=C, solver="lbfgs", tol=1e-10, max_iter=10_000).fit(Xn, yn)

    t_sk = measure_interleaved({"sk": Case(sk_fit)}, repeats=repeats, warmup=1)["sk"]
    m = sk_holder["m"]
    z = Xn @ m.coef_[0] + m.intercept_[0]
    sk_loss = float(np.mean(np.logaddexp(0, z) - yn * z) + 0.5 * l2 * np.sum(m.coef_ ** 2))
    table.add(section, f"sklearn LogisticRegression lbfgs, {n:,} x {d}, float64", t_sk,
              note=f"objective {sk_loss:.10f}")

    from torch_logreg.solvers import fit_exact

    sk_reached = sk_loss + 4 * np.finfo(np.float64).eps * abs(sk_loss)
    Xt = X.double()
    for name in ("newton", "lbfgs"):
        holder = {}

        def run(name=name, holder=holder):
            model = hand_model(d, 1, dtype=torch.float64)
            # stop as soon as the objective is no worse than scikit-learn's optimum. The two objectives
            # come from different code (NumPy's logaddexp here, the project's loss there), equal only to
            # rounding: a solve at the optimum may read a few ulps above scikit-learn's, and one more
            # Newton iteration would then only move the last digit
            holder["result"] = fit_exact(model, Xt, y, solver=name, l2=l2, tol=0.0, max_iter=500, warn=False,
                                         check_separation=False, callback=lambda it, obj: obj <= sk_reached, step=STEP)
            holder["m"] = model

        t = measure_interleaved({"s": Case(run)}, repeats=repeats, warmup=1)["s"]
        T = holder["m"].targets(y, n)
        loss = float(holder["m"].objective(Xt, T, l2))
        table.add(section, f"torch_logreg fit_exact({name}) to the same objective", t, vs="sklearn lbfgs",
                  other=t_sk, note=f"objective {loss:.10f}, {holder['result'].n_iter} iterations")


def sparse_l1(table: Table, n: int, d: int, repeats: int) -> None:
    """scikit-learn saga vs ``fit_exact(solver="proximal")`` and ``fit_exact(solver="cd")`` to the same objective: L1 logistic
    regression at ``C = 0.1`` (``l1 = 1 / (C N)``) on a float64 CSR matrix of ``n`` rows and ``d``
    columns, 50 stored entries a row, labels from 1,000 of the columns. saga stops at its default
    ``tol = 1e-4``, ours once its objective is no worse than saga's (CPU: saga has no GPU)."""
    section = "exact"
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression as SkLogReg

    from torch_logreg import validation
    from torch_logreg.solvers import fit_exact

    rng = np.random.default_rng(0)
    per_row, C = 50, 0.1
    rows = np.repeat(np.arange(n), per_row)
    X = sp.csr_matrix((rng.standard_normal(n * per_row), (rows, rng.integers(0, d, n * per_row))), shape=(n, d))
    coef = np.zeros(d)
    coef[:1000] = 2 * rng.standard_normal(1000)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ coef)))).astype(np.int64)
    l1 = 1.0 / (C * n)

    def objective(w: np.ndarray, b: float) -> float:
        z = X @ w + b
        return float(np.mean(np.logaddexp(0, z) - y * z) + l1 * np.abs(w).sum())

    sk_holder = {}

    def sk_fit():
        sk_holder["m"] = SkLogReg(C=C, l1_ratio=1.0, solver="saga", tol=1e-4, max_iter=1000, random_state=0).fit(X, y)

    t_sk = measure_interleaved({"sk": Case(sk_fit)}, repeats=repeats, warmup=0)["sk"]
    m = sk_holder["m"]
    sk_obj = objective(m.coef_[0], m.intercept_[0])
    table.add(section, f"sklearn LogisticRegression saga L1, {n:,} x {d:,} sparse ({X.nnz:,} stored), float64",
              t_sk, note=f"objective {sk_obj:.10f}, {int(m.n_iter_[0])} epochs, {int((m.coef_ != 0).sum())} nonzero")

    Xt = validation.as_tensor(X, "X")  # a torch CSR tensor, as fit_exact would make it
    yt = torch.from_numpy(y)
    # the proximal gradient, then proximal Newton with coordinate descent (its first call loads its numba kernels)
    for solver, max_iter in (("proximal", 20_000), ("cd", 1000)):
        holder = {}

        def run(holder=holder, solver=solver, max_iter=max_iter):
            model = hand_model(d, 1, dtype=torch.float64)
            holder["result"] = fit_exact(model, Xt, yt, solver=solver, l1=l1, tol=0.0, max_iter=max_iter, warn=False,
                                         check_separation=False, callback=lambda it, obj: obj <= sk_obj)
            holder["m"] = model

        t = measure_interleaved({solver: Case(run)}, repeats=repeats, warmup=0)[solver]
        lin = holder["m"].linear
        w = lin.weight.detach()[0].numpy()
        table.add(section, f"torch_logreg fit_exact({solver}) L1 to the same objective", t, vs="sklearn saga",
                  other=t_sk, note=f"objective {objective(w, float(lin.bias.detach()[0])):.10f}, "
                                   f"{holder['result'].n_iter} iterations, {int((w != 0).sum())} nonzero")


_PEAK_CHILD = r"""
import gc, sys, warnings
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
import torch_logreg as tl
from torch_logreg import functional as F
from torch_logreg.steps.sparse import SparseStep
a = {k: np.load(f"{sys.argv[2]}/{k}.npy") for k in ("crow", "col", "val", "y")}
n, d, fused, epochs = len(a["y"]), int(sys.argv[5]), sys.argv[3] == "1", int(sys.argv[4])
X = torch.sparse_csr_tensor(torch.from_numpy(a["crow"]), torch.from_numpy(a["col"]), torch.from_numpy(a["val"]),
                            size=(n, d), check_invariants=False)
y = torch.from_numpy(a["y"])
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
model = tl.LogisticRegression(d)
T = model.targets(y, n)
few = torch.arange(min(n, 64))  # warm-up on a few rows: kernels loaded, the weights allocated
SparseStep(model, F.csr_rows(X, few), T[few], fused=fused).step(F.csr_rows(X, few), T[few], 0.0)
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident size (VmHWM) to the current one
base = status("VmRSS")
step = SparseStep(model, X, T, fused=fused)
params = dict(model.named_parameters())
for _ in range(epochs):
    _, grads = step.step(X, T, 0.0)
    with torch.no_grad():
        for k, p in params.items():
            p.sub_(grads[k], alpha=0.5)
print(status("VmHWM") - base)
"""


def _sparse_peak_memory(Xt, yt, fused: bool, epochs: int) -> int:
    """Bytes training adds to the CSR arrays and the weights at its peak, measured in a child
    process: it loads the CSR arrays, runs one step on 64 rows (kernels loaded, weights
    allocated), resets the kernel's peak resident size (``/proc/self/clear_refs``), builds the
    step and runs ``epochs`` epochs; the result is the peak resident size then (``VmHWM``) less
    the resident size at the reset. Linux (``/proc``); -1 elsewhere."""
    import subprocess
    import tempfile

    if not os.path.exists("/proc/self/clear_refs"):
        return -1
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {"crow": Xt.crow_indices(), "col": Xt.col_indices(), "val": Xt.values(), "y": yt}
        for name, a in arrays.items():  # .npy files: np.load reads each straight into its array
            np.save(os.path.join(tmp, f"{name}.npy"), a.numpy())
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, root, tmp, "1" if fused else "0", str(epochs),
                              str(Xt.shape[1])], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def sparse(table: Table, n: int, d: int, per_row: int, repeats: int, peak_memory: bool = True) -> None:
    """Hashed-feature-sized sparse data: ``n`` x ``d`` float32 CSR, ``per_row`` stored entries a
    row, binary labels. The loop's epoch (the sparse step, which runs the fused kernel of
    ``steps/sparse_fused.py``, plus the update) against one read of the CSR arrays (the floor),
    against the step's torch path (``X W^T`` and ``X^T G`` as sparse products through a stored CSR
    ``X^T``) and against autograd through ``torch.sparse.mm``; the peak memory of training with
    each step, relative to the CSR arrays plus the weights (``peak_memory``: two child processes);
    then scikit-learn's lbfgs at ``C = 1``
    on the same CSR matrix (float64) against ``fit_exact(lbfgs)`` stopped at the same objective."""
    section = "sparse"
    import scipy.sparse as sp

    from torch_logreg import validation
    from torch_logreg.steps.sparse import SparseStep

    rng = np.random.default_rng(1)
    rows = np.repeat(np.arange(n), per_row)
    cols = rng.integers(0, d, n * per_row)
    X = sp.csr_matrix((rng.random(n * per_row, dtype=np.float32), (rows, cols)), shape=(n, d), dtype=np.float32)
    X.sum_duplicates()
    coef = np.zeros(d, dtype=np.float32)
    coef[rng.integers(0, d, 2000)] = rng.standard_normal(2000).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ coef)))).astype(np.int64)
    Xt = validation.as_tensor(X, "X")
    yt = torch.from_numpy(y)
    csr_bytes = sum(t.numel() * t.element_size() for t in (Xt.values(), Xt.col_indices(), Xt.crow_indices()))
    what = f"{n:,} x {d:,} CSR float32, {Xt.values().numel():,} stored ({csr_bytes / 2**20:.0f} MiB)"

    def floor_read():  # one pass over the three CSR arrays
        Xt.values().sum(), Xt.col_indices().sum(), Xt.crow_indices().sum()

    model = hand_model(d, 1)
    T = model.targets(yt, n)
    started = time.perf_counter()
    step = SparseStep(model, Xt, T)  # the loop's step: the fused kernel, X regrouped once by column block
    setup_s = time.perf_counter() - started
    kernel = "blocked fused pass" if step._blocked is not None else "fused row pass" if step._fused else "torch.mv"
    params = dict(model.named_parameters())
    old_model = hand_model(d, 1)
    old_step = SparseStep(old_model, Xt, T, fused=False)  # the torch path: X w, then X^T g through a CSR X^T
    old_params = dict(old_model.named_parameters())

    def epoch(step_, params_):
        def run():
            _, grads = step_.step(Xt, T, 0.0)
            with torch.no_grad():
                for name, p in params_.items():
                    p.sub_(grads[name], alpha=LR)
        return run

    ref = hand_model(d, 1)
    Xc = Xt.to_sparse_coo()

    def autograd_epoch():
        w, b = ref.linear.weight, ref.linear.bias
        z = torch.sparse.mm(Xc, w.T).squeeze(1) + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, T[:, 0])
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w.sub_(gw, alpha=LR)
            b.sub_(gb, alpha=LR)

    times = measure_interleaved({"floor": Case(floor_read), "loop": Case(epoch(step, params)),
                                 "old": Case(epoch(old_step, old_params)), "autograd": Case(autograd_epoch)},
                                repeats=repeats, warmup=1)
    del old_step
    gap = max((p - q).abs().max().item() for p, q in zip(model.parameters(), old_model.parameters()))
    table.add(section, f"one read of the CSR arrays, {what}", times["floor"], floor=times["floor"])
    table.add(section, f"loop epoch, sparse step ({kernel}) + update", times["loop"], floor=times["floor"],
              vs="torch.mv path", other=times["old"],
              note=f"{times['autograd'].median / times['loop'].median:.1f}x faster than autograd; step built in "
                   f"{setup_s:.2f} s; |w - w_torch.mv| = {gap:.0e}")
    table.add(section, "loop epoch, torch.mv path (X W^T, X^T G via a CSR X^T) + update", times["old"],
              floor=times["floor"], vs="autograd", other=times["autograd"])
    table.add(section, "autograd epoch through torch.sparse.mm", times["autograd"], floor=times["floor"])
    weight_bytes = (d + 1) * 4
    memory = table.extra.setdefault("sparse_memory", {})
    for fused, label in ((True, f"sparse step ({kernel})"), (False, "torch.mv path")) if peak_memory else ():
        extra = _sparse_peak_memory(Xt, yt, fused, epochs=3)
        ratio = (csr_bytes + weight_bytes + extra) / (csr_bytes + weight_bytes)
        memory[label] = {"csr_bytes": csr_bytes, "weight_bytes": weight_bytes, "extra_bytes": extra, "ratio": ratio}
        table.notes.append(f"sparse: peak memory of training, {label}: CSR {csr_bytes / 2**20:.0f} MiB + weights "
                           f"{weight_bytes / 2**20:.0f} MiB + {extra / 2**20:.0f} MiB = {ratio:.2f}x (CSR + weights)")
        print(table.notes[-1], file=sys.stderr, flush=True)

    from sklearn.linear_model import LogisticRegression as SkLogReg

    from torch_logreg.solvers import fit_exact

    X64 = X.astype(np.float64)
    X64t = validation.as_tensor(X64, "X")
    l2 = 1.0 / n
    # scikit-learn's lbfgs (tol 1e-6) and saga (its default tol 1e-4) at C = 1, then fit_exact(lbfgs)
    # stopped as soon as its objective is no worse than each one's
    for sk_solver, tol in (("lbfgs", 1e-6), ("saga", 1e-4)):
        sk = {}

        def sk_fit(sk=sk, sk_solver=sk_solver, tol=tol):
            sk["m"] = SkLogReg(C=1.0, solver=sk_solver, tol=tol, max_iter=1000, random_state=0).fit(X64, y)

        t_sk = measure_interleaved({"sk": Case(sk_fit)}, repeats=max(1, repeats // 2), warmup=0)["sk"]
        m = sk["m"]
        z = X64 @ m.coef_[0] + m.intercept_[0]
        sk_obj = float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * np.sum(m.coef_ ** 2))
        table.add(section, f"sklearn LogisticRegression {sk_solver} C=1, same CSR in float64", t_sk,
                  note=f"objective {sk_obj:.10f}, {int(m.n_iter_[0])} {'iterations' if sk_solver == 'lbfgs' else 'epochs'}")
        holder = {}

        def ours(holder=holder, target=sk_obj):
            mdl = hand_model(d, 1, dtype=torch.float64)
            holder["r"] = fit_exact(mdl, X64t, yt, solver="lbfgs", l2=l2, tol=0.0, max_iter=1000, warn=False,
                                    check_separation=False, callback=lambda it, obj: obj <= target)

        t = measure_interleaved({"o": Case(ours)}, repeats=max(1, repeats // 2), warmup=0)["o"]
        table.add(section, f"torch_logreg fit_exact(lbfgs) to sklearn {sk_solver}'s objective", t,
                  vs=f"sklearn {sk_solver}", other=t_sk, note=f"{holder['r'].n_iter} iterations")


def scaling(table: Table, X_all, y_all, ns, device, repeats: int) -> None:
    """Per-epoch time of the loop (full batch) and of autograd for each N; log-log slopes."""
    section = "scaling"
    d = X_all.shape[1]
    hand_t, auto_t, floor_t = [], [], []
    for n in ns:
        X, y = X_all[:n], y_all[:n]
        epochs = max(1, min(50, 10**7 // (n * d) * 5))
        trainer = fit_trainer(hand_model(d, 1, device=device, dtype=X.dtype), X, y, epochs=1, lr=LR,
                              device=device, dtype=X.dtype)
        table.chose(section, f"N={n:.0e} x {d}", trainer.stepper.selection)
        trainer.run()
        ref = AutogradReference(d, 1, lr=LR, device=device, dtype=X.dtype)
        t_ref = ref.targets(y)

        def run_epochs(trainer=trainer, epochs=epochs):
            trainer.epochs += epochs
            trainer.run()

        auto = lambda ref=ref, X=X, t_ref=t_ref: ref.step(X, t_ref)  # noqa: E731
        t = measure_interleaved(
            {"floor": Case(lambda X=X: X.sum()), "hand": Case(run_epochs, per=epochs),
             "auto": Case(auto, inner=auto_inner(auto, device) if n * d < 10**6 else 1)},
            device=device, repeats=repeats, warmup=1,
        )
        table.add(section, f"Trainer.run per epoch, N={n:.0e} x {d}", t["hand"], floor=t["floor"], vs="autograd",
                  other=t["auto"])
        hand_t.append(t["hand"].median)
        auto_t.append(t["auto"].median)
        floor_t.append(t["floor"].median)
        del trainer, ref, t_ref
    if len(ns) >= 2:
        logn = np.log10(np.asarray(ns, dtype=float))
        slopes = {
            name: float(np.polyfit(logn, np.log10(np.asarray(v)), 1)[0])
            for name, v in (("Trainer.run", hand_t), ("autograd", auto_t), ("X.sum()", floor_t))
        }
        big = [i for i, n in enumerate(ns) if n >= 10**5]
        if len(big) >= 2:
            slopes["Trainer.run, N>=1e5"] = float(np.polyfit(logn[big], np.log10(np.asarray(hand_t)[big]), 1)[0])
        table.extra["scaling"] = {"n": list(ns), "trainer_run_s": hand_t, "autograd_s": auto_t, "floor_s": floor_t,
                                  "loglog_slope": slopes}
        table.notes.append(
            f"scaling: log-log slope of time per epoch vs N ({ns[0]:.0e}..{ns[-1]:.0e}): "
            + ", ".join(f"{k} {v:.3f}" for k, v in slopes.items())
        )


def out_of_core(table: Table, X, y, device, batch_size: int, repeats: int) -> None:
    """Mini-batch epochs streamed from a memory-mapped .npy (in the page cache after the first
    read) against the same epochs from memory, same batch order, budget a tenth of the file."""
    import tempfile

    from torch_logreg.streaming import StreamingTrainer

    section = "out-of-core"
    n, d = X.shape
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/X.npy", X.cpu().numpy())
        np.save(f"{tmp}/y.npy", y.cpu().numpy())
        file_bytes = n * d * X.element_size()
        budget = max(file_bytes // 10, 4 * batch_size * d * X.element_size() + (1 << 20))
        memory = fit_trainer(hand_model(d, device=device), X, y, epochs=1, lr=LR, batch_size=batch_size,
                             device=device)
        table.chose(section, f"in memory, B={batch_size}, {d} x 1", memory.stepper.selection)
        streamed = {
            order: StreamingTrainer(hand_model(d, device=device), f"{tmp}/X.npy", f"{tmp}/y.npy", order=order,
                                    memory_budget_bytes=int(budget), solver="gd", lr=LR, epochs=1,
                                    batch_size=batch_size, tol=0.0, patience=0, device=device, dtype=X.dtype)
            for order in ("permutation", "blocks")
        }

        def one_more_epoch(trainer):
            return lambda: (setattr(trainer, "epochs", trainer.epochs + 1), trainer.run())

        cases = {"memory": Case(one_more_epoch(memory))}
        cases.update({order: Case(one_more_epoch(tr)) for order, tr in streamed.items()})
        t = measure_interleaved(cases, device=device, repeats=repeats, warmup=1)
    steps = math.ceil(n / batch_size)
    table.add(section, f"in-memory Trainer.run per epoch, B={batch_size} ({steps} steps)", t["memory"])
    for order, what in (("permutation", "same batches as in memory"), ("blocks", "shuffled contiguous blocks")):
        table.add(section, f"streamed from .npy per epoch, order={order}", t[order], vs="in-memory",
                  other=t["memory"], note=f"{what}; file {file_bytes / 2**20:.0f} MiB, budget "
                                          f"{budget / 2**20:.0f} MiB; ratio = relative throughput")


def tiny(table: Table, device, repeats: int) -> None:
    """100 x 10: fixed per-call costs. fit per step (one step per epoch) vs autograd."""
    section = "tiny"
    X, y = make_binary(100, 10, device=device)
    model = hand_model(10, device=device)
    T = model.targets(y, 100)
    ref = AutogradReference(10, lr=LR, device=device)
    t_ref = ref.targets(y)
    step = hand_step(model, X, T, LR)
    auto = lambda: ref.step(X, t_ref)  # noqa: E731
    E = 200
    trainer = fit_trainer(hand_model(10, device=device), X, y, epochs=1, lr=LR, device=device)
    table.chose(section, "full batch 100 x 10 x 1", trainer.stepper.selection)
    cases = {
        "hand": Case(step, inner=auto_inner(step, device)),
        "auto": Case(auto, inner=auto_inner(auto, device)),
        **{k: v for k, v in fit_cases(10, 1, X, y, epochs=E, lr=LR, device=device, dtype=X.dtype).items()},
    }
    if device.type == "cuda":  # the same loop with the step and update replayed as one CUDA graph
        from torch_logreg import Trainer

        def build_graphed():
            return Trainer(hand_model(10, device=device), X, y, solver="gd", lr=LR, epochs=E, tol=0.0, patience=0,
                           device=device, dtype=X.dtype, cuda_graph=True)

        cases["graph"] = Case(lambda tr: tr.run(), setup=build_graphed, per=E)
    t = measure_interleaved(cases, device=device, repeats=repeats, warmup=1)
    table.add(section, "hand-written step, 100 x 10", t["hand"], vs="autograd", other=t["auto"])
    table.add(section, "autograd + torch.optim.SGD step", t["auto"])
    table.add(section, f"Trainer.run per step (E={E})", t["run"], vs="autograd", other=t["auto"])
    if "graph" in t:
        table.add(section, f"Trainer.run per step, cuda_graph=True (E={E})", t["graph"], vs="autograd",
                  other=t["auto"], note="graph captured in the timed run")
    table.add(section, f"fit per step, setup included (E={E})", t["fit"], vs="autograd", other=t["auto"])


def _timing(samples: list[float]) -> Timing:
    import statistics

    return Timing(statistics.median(samples), len(samples), 1, tuple(samples))


def _fresh_runs(case: str, methods: tuple[str, ...], repeats: int) -> tuple[dict, dict[str, Timing], dict[str, Timing]]:
    """``benchmarks/fresh.py case method`` for each method, each in a fresh interpreter, ``repeats``
    rounds in a rotating order: the reports by method, and the first and second fits' timings."""
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fresh.py")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(repeats):
        shift = r % len(methods)
        for m in methods[shift:] + methods[:shift]:
            out = subprocess.run([sys.executable, script, case, m], capture_output=True, text=True, check=True)
            runs[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = ({m: _timing([r[field] for r in runs[m]]) for m in methods} for field in ("first", "second"))
    return runs, first, second


def fresh(table: Table, repeats: int, quick: bool = False) -> None:
    """Fresh interpreters (``benchmarks/fresh.py``): a script's first fit, every one-time cost
    included, against the same fit with the kernel step forced and against autograd (scikit-learn
    for ``fit_exact``), each in a process of its own, round-robin. ``quick``: the tiny case, without the forced kernel."""
    from fresh import CASES, NEWTON

    section = "fresh"
    methods = ("hand", "autograd") if quick else ("hand", "kernel", "autograd")
    for case, (n, d, k, epochs, kernel_step) in CASES.items():
        if quick and case != "tiny":
            continue
        runs, first, second = _fresh_runs(case, methods, repeats)
        shape = f"{n:,} x {d}" + (f" x {k}" if k > 1 else "")
        for m, label in (("hand", f"fit, step={STEP!r}"), ("kernel", f"fit, step={kernel_step!r} (numba loaded)")):
            if m not in methods:
                continue
            setup = first[m].median - second[m].median
            note = (f"set-up {format_seconds(setup)} = {setup / (second[m].median / epochs):.1f} epochs; "
                    f"numba {'loaded' if runs[m][0]['numba'] else 'not imported'}; {runs[m][0]['step']}")
            table.add(section, f"{shape}, E={epochs}: first {label}", first[m], vs="autograd", other=first["autograd"],
                      note=note)
        table.add(section, f"{shape}, E={epochs}: first autograd fit", first["autograd"],
                  note=f"set-up {format_seconds(first['autograd'].median - second['autograd'].median)}")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return
    if quick:
        return
    n, d, _ = NEWTON
    runs, first, second = _fresh_runs("newton", methods, repeats)
    for m, label in (("hand", "fit_exact(newton)"), ("kernel", "fit_exact(newton), numba loaded in it")):
        table.add(section, f"{n:,} x {d} float64: first {label}", first[m], vs="sklearn lbfgs",
                  other=first["autograd"], note=f"second {format_seconds(second[m].median)}; numba "
                                                f"{'loaded' if runs[m][0]['numba'] else 'not imported'}")
    table.add(section, f"{n:,} x {d} float64: first sklearn lbfgs fit", first["autograd"],
              note=f"tol 1e-8; second {format_seconds(second['autograd'].median)}")


def fits(table: Table, repeats: int, quick: bool = False) -> None:
    """What a user meets (``benchmarks/fits.py``): in fresh interpreters, the first fit and five fits
    one after another, from just before the first call to just after the last, with the library's
    default step, with the torch path forced and with the autograd loop over the same epochs and
    batches. ``quick``: the small binary case, the default step and autograd only."""
    import statistics

    from fits import CASES, FITS, METHODS, QUICK, run_case

    section = "fits"
    methods = ("rule", "autograd") if quick else METHODS
    for spec in (QUICK if quick else CASES).values():
        kind, n, d, epochs, batch_size = spec
        samples = run_case(spec, methods, repeats)
        shape = f"{kind} {n:,} x {d}" + (" x 10" if kind == "softmax" else "") + f", E={epochs}" + \
            (f", B={batch_size}" if batch_size else "")
        for i, what in enumerate(("first fit in a fresh process", f"{FITS} fits in one process")):
            t = {m: _timing(samples[m][i]) for m in methods}
            for m in methods:
                label = {"rule": "step='rule'", "torch": "torch path forced", "autograd": "autograd loop"}[m]
                table.add(section, f"{shape}: {what}, {label}", t[m], vs="" if m == "autograd" else "autograd",
                          other=None if m == "autograd" else t["autograd"],
                          note=f"per fit {format_seconds(statistics.median(samples[m][i]) / (1 if i == 0 else FITS))}")


# --- main --------------------------------------------------------------------------------------


#: the sections of the suite, in the order they run
SECTIONS = ("binary", "softmax", "exact", "l1", "sparse", "out-of-core", "scaling", "tiny", "fresh", "fits")


def _sections(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in names if v not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {unknown or [value]}; choose from {', '.join(SECTIONS)}")
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="every section on smaller problems, fewer repeats (well under a minute once numba's cache "
                        "holds the kernels; a first-ever run compiles them too)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and the machine description as JSON")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--only", metavar="SECTIONS", type=_sections, default=SECTIONS,
                   help=f"run only these sections, comma-separated, from: {', '.join(SECTIONS)} (default: all; "
                        "binary includes its mini-batches and SGDClassifier, softmax its mini-batches; l1 is "
                        "the exact section's L1 rows)")
    args = p.parse_args(argv)
    only = args.only
    device = resolve_bench_device(args.device)
    torch.manual_seed(0)
    q = args.quick
    started = time.perf_counter()
    info = machine_info(device)
    info["step"] = STEP
    print(describe_machine(info), flush=True)
    from torch_logreg.steps import jit

    info["numba_load_s"] = jit.load_now()  # the other sections measure warm steps; "fresh" the one-time costs
    print(f"numba loaded in {format_seconds(info['numba_load_s'])} (once per process; see the fresh section)",
          flush=True)
    print(f"loop step: {STEP!r} (the rule table's step for a long run)", flush=True)

    table = Table()
    # --quick: every section on problems a fifth to a tenth of the full run's, so that it runs in well
    # under a minute once numba's disk cache holds the kernels (benchmarks/README.md)
    n_main = 2 * 10**5 if q else 10**6
    n_max = 10**7 if not q and "scaling" in only else n_main  # 4 GB of float32 for scaling's largest N only
    ns = [10**4, 10**5, 2 * 10**5] if q else [10**4, 10**5, 10**6, 10**7]
    X_all, y_all = make_binary(n_max, 100, device=device)
    X, y = X_all[:n_main], y_all[:n_main]

    if "binary" in only:
        floor = full_batch(table, "binary", X, y, 1, device, repeats=3 if q else 11, epochs=2 if q else 5)
        hand_epoch = next(r["median_s"] for r in table.rows if r["case"].startswith("Trainer.run per epoch"))
        n_sgd = 2 * 10**4 if q else n_main
        if n_sgd == n_main:
            sklearn_sgd(table, "binary", X, y, floor, hand_epoch, repeats=2 if q else 5)
        else:  # --quick: a slice, compared with the loop's per-epoch time scaled to the same rows
            sklearn_sgd(table, "binary", X[:n_sgd], y[:n_sgd], floor, hand_epoch * n_sgd / n_main, repeats=2)
            table.rows[-1]["note"] += f", N={n_sgd:,}; ratio vs Trainer.run scaled by rows"
            table.rows[-1]["x_floor"] = None

        n_mb = 5_000 if q else 50_000
        mini_batches(table, "binary mb", X[:n_mb], y[:n_mb], 1, device, (64, 256, 1024), repeats=2 if q else 5)
        table.notes.append(f"binary mb: N = {n_mb:,} x 100 float32")

    if "softmax" in only:
        n_soft = 10_000 if q else 60_000
        Xs, ys = make_multiclass(n_soft, 784, 10, device=device)
        full_batch(table, "softmax", Xs, ys, 10, device, repeats=3 if q else 11, epochs=2 if q else 5)
        n_smb = 2_000 if q else 20_000
        mini_batches(table, "softmax mb", Xs[:n_smb], ys[:n_smb], 10, device, (64, 256, 1024), repeats=2 if q else 5)
        table.notes.append(f"softmax: {n_soft:,} x 784 x 10 float32 (mini-batches on the first {n_smb:,} rows)")
        del Xs, ys

    if {"exact", "l1", "sparse"} & set(only):
        try:
            import sklearn  # noqa: F401
            if "exact" in only:
                n_ex = 5_000 if q else 100_000
                exact_solvers(table, X[:n_ex], y[:n_ex], l2=1e-4, repeats=2 if q else 5)
            if "l1" in only:
                sparse_l1(table, 2_000 if q else 100_000, 5_000 if q else 100_000, repeats=1 if q else 3)
            if "sparse" in only:
                sparse(table, 5_000 if q else 500_000, 1 << 15 if q else 1 << 20, 40, repeats=3 if q else 7,
                       peak_memory=not q)
        except ImportError:
            table.add("exact", "sklearn LogisticRegression lbfgs", None, note="scikit-learn not installed")

    if "out-of-core" in only:
        n_ooc = 20_000 if q else 500_000
        out_of_core(table, X[:n_ooc], y[:n_ooc], device, batch_size=4096, repeats=2 if q else 5)

    if "scaling" in only:
        scaling(table, X_all, y_all, ns, device, repeats=3 if q else 5)
    del X_all, y_all, X, y
    if "tiny" in only:
        tiny(table, device, repeats=5 if q else 31)
    if "fresh" in only and device.type == "cpu":
        fresh(table, repeats=1 if q else 3, quick=q)
    if "fits" in only and device.type == "cpu":
        fits(table, repeats=1 if q else 3, quick=q)

    elapsed = time.perf_counter() - started
    print()
    print(table.render())
    for note in table.notes:
        print(note)
    print(f"steps the selector chose (step={STEP!r}):")
    for c in table.extra["selector"]:
        print(f"  {c['section']:<12} {c['case']}: {c['step']} "
              f"({'; '.join(p for p in (c['source'], c['rule'], c['reason']) if p)})")
    print("'x floor' = median / median of X.sum() on the same data (one read of the features); "
          "ratio = compared-with / this, above 1 means this row is faster.")
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    info["load_average_end"] = load
    print(f"total {elapsed:.1f} s{' (--quick)' if q else ''}; load average at the end: {load}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": q, "rows": table.rows, "notes": table.notes, **table.extra,
                       "elapsed_s": elapsed}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
