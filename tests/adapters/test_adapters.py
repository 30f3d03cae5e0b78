"""One conformance check for every adapter kind, plus each kind's own reference."""

import sys
import warnings

import numpy as np
import pytest
import scipy.special
import torch

from ebjr.adapters import as_adapter
from ebjr.adapters.base import Adapter
from ebjr.exceptions import InputError, LogProbabilityInputError, MissingDependencyError
from ebjr.joint import JointModel
from ebjr.routing import get_router

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 8)).astype(np.float32)


def torch_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def onnx_model(tmp_path):
    pytest.importorskip("onnxruntime")
    model = torch_model().eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(X),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("n")},),
        dynamo=True,
        verbose=False,
    )
    return str(path), model


def sklearn_model():
    from sklearn.linear_model import LogisticRegression

    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    return LogisticRegression(max_iter=500).fit(X, y)


def transformers_model():
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return tf.BertForSequenceClassification(cfg).eval()


def bert_batch(n):
    g = torch.Generator().manual_seed(n)
    return {
        "input_ids": torch.randint(5, 50, (n, 7), generator=g),
        "attention_mask": torch.ones(n, 7, dtype=torch.long),
    }


def cases(tmp_path):
    """(name, adapter, batch maker, reference logits function)."""
    tm = torch_model().eval()
    path, om = onnx_model(tmp_path)
    sk = sklearn_model()
    bert = transformers_model()
    fn = lambda b: np.asarray(b, dtype=np.float64) @ np.ones((8, 3))  # noqa: E731
    rows = lambda n: X[:n]  # noqa: E731
    return [
        ("torch", as_adapter(tm), rows, lambda b: tm(torch.as_tensor(b)).detach().numpy()),
        ("callable", as_adapter(fn), rows, fn),
        ("onnx", as_adapter(path), rows, lambda b: om(torch.as_tensor(b)).detach().numpy()),
        ("sklearn", as_adapter(sk), rows, sk.decision_function),
        ("transformers", as_adapter(bert), bert_batch, lambda b: bert(**b).logits.detach().numpy()),
    ]


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def test_conformance(tmp_path):
    for name, adapter, make, reference in cases(tmp_path):
        assert isinstance(adapter, Adapter) and adapter.kind == name, name
        for n in (1, 5):
            batch = make(n)
            out = adapter(batch)
            assert tuple(out.shape) == (n, 3), name
            np.testing.assert_allclose(
                _np(out), reference(batch), rtol=1e-4, atol=1e-5, err_msg=name
            )
            np.testing.assert_array_equal(_np(adapter(batch)), _np(out), err_msg=name)
        # every adapter works as a student inside a JointModel
        joint = JointModel(adapter, adapter, "softmax", 0.5)
        pred = joint.predict(make(5)).predictions
        assert tuple(pred.shape) == (5,), name


def test_torch_adapter_accepts_numpy_and_stays_on_device():
    adapter = as_adapter(torch_model())
    out = adapter(X.astype(np.float64))  # cast to the parameters' dtype
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert not out.requires_grad


def test_torch_output_kinds():
    class Dict(torch.nn.Module):
        def forward(self, x):
            return {"logits": x[:, :3]}

    class Tup(torch.nn.Module):
        def forward(self, x):
            return (x[:, :3], x)

    class Bad(torch.nn.Module):
        def forward(self, x):
            return "nope"

    for m in (Dict(), Tup()):
        assert tuple(as_adapter(m)(X[:4]).shape) == (4, 3)
    with pytest.raises(InputError, match="expected a logits tensor"):
        as_adapter(Bad())(X[:2])


def test_sklearn_logits_are_the_models_logits():
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x[:400] / 16.0
    y = y[:400]
    lr = LogisticRegression(max_iter=300).fit(x, y)
    with warnings.catch_warnings():  # a few iterations are enough: only the logits matter
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(x, y)
        binary_mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
        binary_mlp.fit(x, y % 2)
    for model, method in [(lr, "decision_function"), (mlp, "mlp_logits")]:
        adapter = as_adapter(model)
        assert adapter.method == method and not adapter.returns_log_probs
        np.testing.assert_allclose(
            scipy.special.softmax(adapter(x[:50]), axis=1),
            model.predict_proba(x[:50]),
            rtol=1e-6,
            atol=1e-9,
        )
    binary = LogisticRegression().fit(x, y % 2)
    np.testing.assert_allclose(
        scipy.special.softmax(as_adapter(binary)(x[:20]), axis=1), binary.predict_proba(x[:20])
    )
    np.testing.assert_allclose(
        scipy.special.softmax(as_adapter(binary_mlp)(x[:20]), axis=1),
        binary_mlp.predict_proba(x[:20]),
        rtol=1e-6,
    )
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    adapter = as_adapter(forest)
    assert adapter.returns_log_probs
    logits = adapter(x[:30])
    assert np.all(np.isfinite(logits))
    with pytest.raises(LogProbabilityInputError, match="log-probabilities"):
        get_router("energy").score(logits)
    with pytest.raises(InputError, match="is not fitted"):
        as_adapter(LogisticRegression())


def test_transformers_text_and_images(tmp_path):
    tf = pytest.importorskip("transformers")
    vocab = tmp_path / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "sat", "on", "mat", "the"]
    vocab.write_text("\n".join(words + [f"w{i}" for i in range(39)]) + "\n")
    tok = tf.BertTokenizerFast(vocab_file=str(vocab))
    adapter = as_adapter(transformers_model(), preprocessor=tok)
    out = adapter(["the cat sat", "a cat sat on the mat"])
    assert tuple(out.shape) == (2, 3)
    pairs = adapter([("the cat", "sat"), ("a mat", "the cat")])
    assert tuple(pairs.shape) == (2, 3)
    no_tok = as_adapter(transformers_model())
    with pytest.raises(InputError, match="raw text needs a tokenizer"):
        no_tok(["the cat"])
    torch.manual_seed(0)
    vit = tf.ViTForImageClassification(
        tf.ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=3,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=5,
        )
    ).eval()
    pixels = torch.randn(4, 3, 8, 8)
    np.testing.assert_allclose(
        as_adapter(vit)(pixels).numpy(),
        vit(pixel_values=pixels).logits.detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_missing_optional_dependency_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    from ebjr.adapters.onnx import OnnxAdapter

    with pytest.raises(MissingDependencyError, match=r"pip install 'ebjr\[onnx\]'"):
        OnnxAdapter(str(tmp_path / "m.onnx"))
    monkeypatch.setitem(sys.modules, "transformers", None)
    from ebjr.adapters.transformers import TransformersAdapter

    with pytest.raises(MissingDependencyError, match=r"pip install 'ebjr\[transformers\]'"):
        TransformersAdapter.from_pretrained("bert-base-uncased")


def test_unknown_model_kind():
    with pytest.raises(InputError, match="cannot use a int as a model"):
        as_adapter(3)
    with pytest.raises(InputError, match="ONNX file not found"):
        as_adapter("missing.onnx")
