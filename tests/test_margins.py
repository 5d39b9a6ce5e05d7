"""Marginal effects at every ``at=``, ``method=`` and ``dummy=`` against statsmodels' ``get_margeff``."""

import numpy as np
import pytest
import statsmodels.api as sm
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.inference import infer
from torch_logreg.inference.margins import AT, METHODS, margeff_terms
from torch_logreg.solvers import fit_exact

from conftest import CUDA_ONLY

SM_FIT = dict(disp=0, method="newton", tol=1e-12, maxiter=100)
#: statsmodels refuses these (``_check_discrete_args``): a 0/1 column has no logarithm, and at a median or
#: zero row its switch is not defined
REFUSED = {("median", True): "statsmodels: median not allowed for discrete variables",
           ("zero", True): "statsmodels: zero not allowed for discrete variables",
           ("eyex", True): "statsmodels: eyex not allowed for discrete variables",
           ("dyex", True): "statsmodels: dyex not allowed for discrete variables"}


#: statsmodels 0.15's MNLogit raises on these (its x does not broadcast against the (N, K, J) effects):
#: :func:`test_mnlogit_elasticities_match_complex_step` checks them against statsmodels' dy/dx instead
MNLOGIT_BROKEN = "statsmodels: MNLogit raises ValueError (operands could not be broadcast) for method {}"


def _grid(multinomial=False):
    for at in AT:
        for method in METHODS:
            for dummy in (False, True):
                reason = REFUSED.get((at, dummy)) or REFUSED.get((method, dummy))
                if not reason and multinomial and method.endswith("ex"):
                    reason = MNLOGIT_BROKEN.format(method)
                marks = [pytest.mark.skip(reason=reason)] if reason else []
                yield pytest.param(at, method, dummy, marks=marks, id=f"{at}-{method}-{'dummy' if dummy else 'cont'}")


def _infer(model, X, y, w=None):
    model = model.double()
    return infer(model, X, y, w, result=fit_exact(model, X, y, sample_weight=w, tol=1e-11))


@pytest.fixture(scope="module")
def spector():
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy(dtype=float).copy()
    ref = sm.Logit(y, sm.add_constant(X)).fit(**SM_FIT)
    return ref, _infer(tl.LogisticRegression(3), X, y)


@pytest.fixture(scope="module")
def anes96():
    """anes96 with a 0/1 column added (college: educ >= 6) so that ``dummy=True`` has a switch to read."""
    data = sm.datasets.anes96.load_pandas()
    X = data.exog.to_numpy(dtype=float).copy()
    X = np.column_stack([X, (X[:, 3] >= 6).astype(float)])
    y = data.endog.to_numpy().astype(int)
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(**SM_FIT)
    return ref, _infer(tl.SoftmaxRegression(X.shape[1], 7), X, y)


def _close(ours, theirs, rtol=1e-8):
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # statsmodels' z of PSI's 0 +- 0
@pytest.mark.parametrize("at,method,dummy", list(_grid()))
def test_logit_margeff_grid(spector, at, method, dummy):
    ref, res = spector
    me, expected = res.get_margeff(at, method, dummy), ref.get_margeff(at=at, method=method, dummy=dummy)
    _close(me.margeff, expected.margeff)
    _close(me.margeff_se, expected.margeff_se)
    _close(me.margeff_cov, expected.margeff_cov)
    frame, frame_ref = me.summary_frame(), expected.summary_frame()
    assert frame.columns == list(frame_ref.columns)
    assert METHODS[method] in str(me.summary())


@pytest.mark.parametrize("at,method,dummy", list(_grid(multinomial=True)))
def test_mnlogit_margeff_grid(anes96, at, method, dummy):
    ref, res = anes96
    me, expected = res.get_margeff(at, method, dummy), ref.get_margeff(at=at, method=method, dummy=dummy)
    assert me.margeff.shape == (7, 6)  # (K, D); statsmodels lays them out (D, K)
    _close(me.margeff, expected.margeff.T)
    _close(me.margeff_se, expected.margeff_se.T)
    _close(me.margeff_cov, expected.margeff_cov, rtol=1e-7)


@pytest.mark.parametrize("at", AT)
@pytest.mark.parametrize("method", ["eyex", "dyex"])
def test_mnlogit_elasticities_match_complex_step(anes96, at, method):
    """Where statsmodels' MNLogit raises: the transform of its per-row dy/dx, averaged (``at="overall"``) or at
    statsmodels' evaluation row, with the Jacobian by statsmodels' complex step."""
    from statsmodels.discrete.discrete_margins import _get_margeff_exog
    from statsmodels.tools.numdiff import approx_fprime_cs

    ref, res = anes96
    model = ref.model
    const = model.exog.var(0) == 0
    exog = _get_margeff_exog(model.exog.copy(), at, None, ~const)

    def effects(params):
        dydx = model._derivative_exog(params, exog, "dydx").reshape(len(exog), model.K, model.J, order="F")
        e = dydx * exog[:, :, None]
        if method == "eyex":
            e = e / model.predict(params.reshape(model.K, -1, order="F"), exog)[:, None, :]
        return e.mean(0).reshape(-1, order="F")

    params = np.asarray(ref.params).ravel("F")
    jac = approx_fprime_cs(params, effects)
    keep = np.tile(~const, model.J)
    cov = (jac @ ref.cov_params() @ jac.T)[np.ix_(keep, keep)]
    expected = effects(params)[keep].reshape(-1, model.J, order="F")
    me = res.get_margeff(at, method)
    _close(me.margeff, expected.T)
    _close(me.margeff_se, np.sqrt(np.diag(cov)).reshape(-1, model.J, order="F").T)
    _close(me.margeff_cov, cov, rtol=1e-7)


def test_dummy_is_the_discrete_change(spector):
    """PSI (0/1) with dummy=True: the average of p(PSI = 1) - p(PSI = 0) over the students, by hand."""
    ref, res = spector
    X = sm.add_constant(sm.datasets.spector.load_pandas().exog.to_numpy(dtype=float))
    on, off = X.copy(), X.copy()
    on[:, 3], off[:, 3] = 1, 0
    p = lambda Z: 1 / (1 + np.exp(-Z @ res.params))  # noqa: E731
    me = res.get_margeff(dummy=True)
    np.testing.assert_allclose(me.margeff[2], np.mean(p(on) - p(off)), rtol=1e-12)
    assert me.dummy and not res.get_margeff().dummy


def test_median_and_mean_with_frequency_weights_equal_repeated_rows(spector):
    ref, _ = spector
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=float), data.endog.to_numpy(dtype=float)
    w = np.random.default_rng(1).integers(1, 4, len(y)).astype(float)
    weighted = _infer(tl.LogisticRegression(3), X, y, w)
    repeated = _infer(tl.LogisticRegression(3), np.repeat(X, w.astype(int), 0), np.repeat(y, w.astype(int)))
    for at in AT:
        for method in ("dydx", "eyex"):
            a, b = weighted.get_margeff(at, method), repeated.get_margeff(at, method)
            np.testing.assert_allclose(a.margeff, b.margeff, rtol=1e-7, atol=1e-12)
            np.testing.assert_allclose(a.margeff_se, b.margeff_se, rtol=1e-7)


def test_margeff_refusals(spector):
    _, res = spector
    with pytest.raises(UsageError, match="at must be one of 'overall', 'mean', 'median', 'zero', got 'all'"):
        res.get_margeff(at="all")
    with pytest.raises(UsageError, match="method must be one of .* got 'dx'"):
        res.get_margeff(method="dx")
    with pytest.raises(UsageError, match="method='eyex' takes the logarithm"):
        res.get_margeff(method="eyex", dummy=True)
    with pytest.raises(UsageError, match="at='zero' sets each 0/1 column"):
        res.get_margeff(at="zero", dummy=True)


@pytest.mark.parametrize("ey,ex", [(False, True), (True, False), (True, True)])
def test_jacobian_of_every_method_matches_finite_differences(ey, ex):
    """The closed-form Jacobian of :func:`margeff_terms` against central differences of its effects."""
    rng = np.random.default_rng(5)
    n, a, k = 30, 3, 3
    Xa = torch.as_tensor(np.column_stack([np.ones(n), rng.normal(size=(n, a - 1))]))
    B = torch.as_tensor(np.vstack([np.zeros(a), rng.normal(size=(k - 1, a))]))
    omega = torch.as_tensor(rng.random(n))
    _, jac = margeff_terms(Xa, B, omega, ey=ey, ex=ex)
    fd = torch.zeros_like(jac)
    h = 1e-6
    for col in range((k - 1) * a):
        step = torch.zeros(k * a, dtype=B.dtype)
        step[a + col] = h
        plus = margeff_terms(Xa, B + step.view(k, a), omega, ey=ey, ex=ex)[0]
        minus = margeff_terms(Xa, B - step.view(k, a), omega, ey=ey, ex=ex)[0]
        fd[:, col] = ((plus - minus) / (2 * h)).reshape(-1)
    torch.testing.assert_close(jac, fd, rtol=1e-6, atol=1e-8)
    for chunk in (1, 7):  # the sums over chunks of rows equal one pass
        torch.testing.assert_close(margeff_terms(Xa, B, omega, chunk, ey=ey, ex=ex)[1], jac, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("device", CUDA_ONLY)
def test_margins_and_profile_intervals_on_cuda_match_cpu(device):
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy(dtype=float).copy()
    results = {}
    for dev in ("cpu", device):
        model = tl.LogisticRegression(3).double().to(dev)
        results[dev] = infer(model, X, y, result=fit_exact(model, X, y, tol=1e-11))
    cpu, gpu = results["cpu"], results[device]
    for at, method, dummy in (("median", "eyex", False), ("mean", "eydx", True), ("overall", "dyex", False)):
        a, b = gpu.get_margeff(at, method, dummy), cpu.get_margeff(at, method, dummy)
        np.testing.assert_allclose(a.margeff, b.margeff, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.margeff_se, b.margeff_se, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gpu.conf_int(method="profile"), cpu.conf_int(method="profile"), rtol=1e-7)
