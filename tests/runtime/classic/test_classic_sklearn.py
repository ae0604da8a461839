"""scikit-learn models converted by coremltools (scikit-learn <= 1.5.1) against scikit-learn's own predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn", reason="coremltools' sklearn converter needs scikit-learn <= 1.5.1")

from sklearn import datasets  # noqa: E402


def _convert(model, inputs="x", output="target"):
    warnings.filterwarnings("ignore")
    import coremltools as ct

    return ct.converters.sklearn.convert(model, inputs, output).get_spec()


def _build(spec):
    from tensorlogic.runtime.classic import build

    return build(spec)


@pytest.fixture(scope="module")
def iris():
    x, y = datasets.load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def diabetes():
    return datasets.load_diabetes(return_X_y=True)


def _probs(out, classes):
    return np.array([out["classProbability"][c] for c in classes])


@pytest.mark.parametrize("kernel", ["rbf", "linear", "poly", "sigmoid"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_svc_with_probabilities(iris, kernel, n_classes):
    from sklearn.svm import SVC

    x, y = iris
    y = y if n_classes == 3 else (y > 0).astype(int)
    model = SVC(kernel=kernel, probability=True, gamma=0.3, coef0=0.1, random_state=0).fit(x, y)
    runner = _build(_convert(model))
    # scikit-learn couples pairwise probabilities even for two classes; libsvm (and Core ML) use them directly.
    tol = 1e-9 if n_classes == 3 else 5e-3
    for row in x[::3]:
        out = runner.run({"x": torch.tensor(row)})
        np.testing.assert_allclose(_probs(out, model.classes_), model.predict_proba(row[None])[0], atol=tol)
        assert out["target"] == model.predict(row[None])[0]


@pytest.mark.parametrize("cls", ["SVC", "NuSVC"])
def test_svc_labels_without_probabilities(iris, cls):
    from sklearn import svm

    x, y = iris
    model = getattr(svm, cls)(kernel="rbf", gamma=0.5).fit(x, y)
    runner = _build(_convert(model))
    labels = [runner.run({"x": torch.tensor(row)})["target"] for row in x]
    np.testing.assert_array_equal(labels, model.predict(x))


@pytest.mark.parametrize("cls,kw", [("SVR", {"kernel": "rbf", "gamma": 0.1}), ("SVR", {"kernel": "poly", "degree": 2}),
                                    ("NuSVR", {"kernel": "linear"})])
def test_support_vector_regression(diabetes, cls, kw):
    from sklearn import svm

    x, y = diabetes
    model = getattr(svm, cls)(C=10.0, **kw).fit(x[:200], y[:200])
    runner = _build(_convert(model))
    got = [runner.run({"x": torch.tensor(row)})["target"] for row in x[200:240]]
    np.testing.assert_allclose(got, model.predict(x[200:240]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cls", ["LinearRegression", "Ridge"])
def test_linear_regressors(diabetes, cls):
    from sklearn import linear_model

    x, y = diabetes
    model = getattr(linear_model, cls)().fit(x, y)
    runner = _build(_convert(model))
    got = [runner.run({"x": torch.tensor(row)})["target"] for row in x[:30]]
    np.testing.assert_allclose(got, model.predict(x[:30]), rtol=1e-9)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # multi_class="ovr"
@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_regression_one_vs_rest(iris, n_classes):
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    y = y if n_classes == 3 else (y == 2).astype(int)
    model = LogisticRegression(multi_class="ovr", max_iter=1000).fit(x, y)
    runner = _build(_convert(model))
    for row in x[::4]:
        out = runner.run({"x": torch.tensor(row)})
        np.testing.assert_allclose(_probs(out, model.classes_), model.predict_proba(row[None])[0], atol=1e-9)
        assert out["target"] == model.predict(row[None])[0]


def test_linear_svc_labels(iris):
    from sklearn.svm import LinearSVC

    x, y = iris
    model = LinearSVC(max_iter=20000).fit(x, y)
    runner = _build(_convert(model))
    np.testing.assert_array_equal([runner.run({"x": torch.tensor(r)})["target"] for r in x], model.predict(x))


def test_decision_tree_and_binary_forest_probabilities(iris):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    x, y = iris
    for model in (DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y),
                  RandomForestClassifier(n_estimators=7, max_depth=4, random_state=0).fit(x, (y == 1).astype(int))):
        runner = _build(_convert(model))
        for row in x[::3]:
            out = runner.run({"x": torch.tensor(row)})
            np.testing.assert_allclose(_probs(out, model.classes_), model.predict_proba(row[None])[0], atol=1e-9)
            assert out["target"] == model.predict(row[None])[0]


def test_multiclass_forest_scores_are_tree_sums(iris):
    """coremltools writes each tree's class fractions unscaled, and Core ML adds them up without normalizing
    (coremltools issue #1541): the scores are n_trees times scikit-learn's probabilities."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = iris
    model = RandomForestClassifier(n_estimators=6, max_depth=3, random_state=0).fit(x, y)
    runner = _build(_convert(model))
    for row in x[::3]:
        out = runner.run({"x": torch.tensor(row)})
        np.testing.assert_allclose(_probs(out, model.classes_), 6 * model.predict_proba(row[None])[0], atol=1e-9)
        assert out["target"] == model.predict(row[None])[0]


@pytest.mark.parametrize("cls", ["DecisionTreeRegressor", "RandomForestRegressor"])
def test_tree_regressors(diabetes, cls):
    from sklearn import ensemble, tree

    x, y = diabetes
    model = (getattr(tree, cls, None) or getattr(ensemble, cls))(max_depth=4, random_state=0)
    if cls != "DecisionTreeRegressor":
        model.set_params(n_estimators=8)
    model.fit(x, y)
    runner = _build(_convert(model))
    got = [runner.run({"x": torch.tensor(row)})["target"] for row in x[:40]]
    np.testing.assert_allclose(got, model.predict(x[:40]), rtol=1e-9)


def test_gradient_boosting_binary_classifier(iris):
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = iris
    model = GradientBoostingClassifier(n_estimators=6, max_depth=2, random_state=0).fit(x, (y == 2).astype(int))
    runner = _build(_convert(model))
    for row in x[::3]:
        out = runner.run({"x": torch.tensor(row)})
        np.testing.assert_allclose(_probs(out, model.classes_), model.predict_proba(row[None])[0], atol=1e-9)


def test_k_neighbors_classifier(iris):
    from sklearn.neighbors import KNeighborsClassifier

    x, y = iris
    model = KNeighborsClassifier(n_neighbors=5).fit(x[::2], y[::2])
    runner = _build(_convert(model))
    labels = [runner.run({"x": torch.tensor(row)})["target"] for row in x[1::2]]
    assert np.mean(np.array(labels) == model.predict(x[1::2])) > 0.95  # ties may break differently


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_normalizer_and_scaler(iris, norm):
    from sklearn.preprocessing import Normalizer, StandardScaler

    x, _ = iris
    x = x - 3.0  # negative values too, so the max norm is a max of magnitudes
    from coremltools.models import datatypes

    for model in (Normalizer(norm=norm).fit(x), StandardScaler().fit(x)):
        runner = _build(_convert(model, [("x", datatypes.Array(4))], "out"))
        for row in x[::10]:
            got = runner.run({"x": torch.tensor(row)})["out"]
            np.testing.assert_allclose(got.numpy(), model.transform(row[None])[0], rtol=1e-6)


def test_imputer_and_one_hot_encoder():
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    data = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, 5.0], [np.nan, 4.0, 6.0]])
    imp = SimpleImputer(strategy="mean").fit(data)
    runner = _build(_convert(imp, "x", "out"))
    row = np.array([np.nan, 7.0, np.nan])
    np.testing.assert_allclose(runner.run({"x": torch.tensor(row)})["out"].numpy(), imp.transform(row[None])[0])

    cats = np.array([[0, 2], [1, 0], [2, 1], [1, 2]])
    enc = OneHotEncoder().fit(cats)
    runner = _build(_convert(enc, [("x", __import__("coremltools").models.datatypes.Array(2))], "out"))
    for row in cats:
        got = runner.run({"x": torch.tensor(row, dtype=torch.float64)})["out"]
        np.testing.assert_array_equal(got.numpy().reshape(-1), enc.transform(row[None]).toarray()[0])


def test_dict_vectorizer():
    from sklearn.feature_extraction import DictVectorizer

    rows = [{"a": 1.0, "c": 2.0}, {"b": 3.0}, {"a": -1.0, "b": 0.5, "c": 4.0}]
    vec = DictVectorizer(sparse=False).fit(rows)
    runner = _build(_convert(vec, "x", "out"))
    for row in rows:
        np.testing.assert_allclose(runner.run({"x": row})["out"].numpy(), vec.transform([row])[0])


@pytest.mark.parametrize("final", ["svc", "forest"])
def test_scaler_pipelines_match_predict_proba(iris, final):
    """The acceptance pipelines: StandardScaler → SVC(probability) and StandardScaler → random forest."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = iris
    if final == "svc":
        clf, target, scale = SVC(probability=True, random_state=0), y, 1.0
    else:  # two classes, where coremltools scales the trees' votes (see test_multiclass_forest_scores_are_tree_sums)
        clf, target, scale = RandomForestClassifier(n_estimators=10, random_state=0), (y == 2).astype(int), 1.0
    pipe = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(x, target)
    spec = _convert(pipe)
    assert spec.WhichOneof("Type") == "pipelineClassifier"
    assert [m.WhichOneof("Type") for m in spec.pipelineClassifier.pipeline.models][0] == "scaler"
    runner = _build(spec)
    rows = x[::2] if final == "svc" else _clear_of_thresholds(x, pipe)
    assert len(rows) > 60
    for row in rows:
        out = runner.run({"x": torch.tensor(row)})
        np.testing.assert_allclose(_probs(out, pipe.classes_), scale * pipe.predict_proba(row[None])[0], atol=1e-9)
        assert out["target"] == pipe.predict(row[None])[0]


def _clear_of_thresholds(x, pipe):
    """Rows whose scaled features are not within 1e-6 of a split threshold: scikit-learn compares in float32,
    the model (like Core ML) in float64, so values that close to a threshold may branch differently."""
    scaled = pipe[0].transform(x)
    keep = []
    for row, s in zip(x, scaled):
        near = any(np.abs(s[t.feature[t.feature >= 0]] - t.threshold[t.feature >= 0]).min(initial=1) < 1e-6
                   for t in (e.tree_ for e in pipe[-1].estimators_))
        if not near:
            keep.append(row)
    return np.array(keep)
