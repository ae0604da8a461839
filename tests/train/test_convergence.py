"""Training reaches known optima: least squares (closed form) and logistic regression (scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorlogic.train import Trainer


def _least_squares_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 4))
    y = x @ np.array([1.5, -2.0, 0.5, 0.25]) + 0.1 * rng.standard_normal(64)
    return x, y


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.float16, 1e-2)])
def test_least_squares_reaches_the_closed_form(dtype: torch.dtype, tol: float) -> None:
    x, y = _least_squares_data()
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    # the closed form for the data as the objective sees it (rounded to dtype)
    best = np.linalg.lstsq(xt.double().numpy(), yt.double().numpy(), rcond=None)[0]
    w = torch.zeros(4, dtype=dtype, requires_grad=True)
    trainer = Trainer({"w": w}, optimizer=("sgd", {"lr": 0.1}), epochs=200, out=None)
    history = trainer.run(lambda epoch: ((xt @ w - yt) ** 2).mean())
    assert w.dtype == dtype and trainer.params["w"] is w
    np.testing.assert_allclose(w.detach().double().numpy(), best, rtol=0, atol=tol)
    assert history[-1] < history[0] / 10


def _logistic_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 2))
    p = 1 / (1 + np.exp(-(x @ np.array([1.2, -0.7]) + 0.3)))
    return x, (rng.random(300) < p).astype(np.float64)  # noisy labels: the optimum is finite


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.float16, 1e-2)])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy's L-BFGS-B options, inside scikit-learn
def test_logistic_regression_matches_scikit_learn(dtype: torch.dtype, tol: float) -> None:
    linear_model = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is not installed")
    x, y = _logistic_data()
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    ref = linear_model.LogisticRegression(penalty=None, tol=1e-10, max_iter=10_000)
    ref.fit(xt.double().numpy(), y)
    w = torch.zeros(2, dtype=dtype, requires_grad=True)
    b = torch.zeros(1, dtype=dtype, requires_grad=True)
    trainer = Trainer({"w": w, "b": b}, optimizer=("adam", {"lr": 0.1}),
                      scheduler=("cosine", {"t_max": 600}), epochs=600, out=None)
    trainer.run(lambda epoch: torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt))
    np.testing.assert_allclose(w.detach().double().numpy(), ref.coef_[0], rtol=0, atol=tol)
    np.testing.assert_allclose(b.detach().double().numpy(), ref.intercept_, rtol=0, atol=tol)


def test_float16_updates_smaller_than_half_an_ulp_are_not_lost() -> None:
    # 1 + 1e-4 rounds back to 1 in float16; 100 such steps must still move the tensor by ~1e-2.
    w = torch.ones(1, dtype=torch.float16, requires_grad=True)
    ident = id(w)
    trainer = Trainer({"w": w}, optimizer=("sgd", {"lr": 1e-4}), epochs=100, out=None)
    trainer.run(lambda epoch: -w.sum())  # gradient -1: each step adds lr
    assert id(trainer.params["w"]) == ident
    assert trainer.masters["w"].dtype == torch.float32
    assert abs(trainer.masters["w"].item() - 1.01) < 1e-5
    assert w.item() == pytest.approx(1.01, abs=1e-3)
