import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ebjr.exceptions import InputError
from ebjr.training import predict_logits, soft_cross_entropy
from ebjr.training.distill import distill, kl_to_teacher, teacher_probabilities, train_specialized
from ebjr.training.specialized import ClassMap
from ebjr.zoo.digits import make_student


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    teacher = LogisticRegression(max_iter=500).fit(x[:900], y[:900])
    return x, y, teacher


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_distillation_lowers_heldout_kl_without_labels(digits, temperature):
    x, _, teacher = digits
    torch.manual_seed(0)
    student = make_student()
    result = distill(
        student, teacher, x[900:], temperature=temperature, epochs=25, progress=False, seed=0
    )
    assert result.heldout_kl_after < 0.5 * result.heldout_kl_before
    # the student now answers like the teacher on inputs it never saw
    agree = predict_logits(student, x[:900]).argmax(1).numpy() == teacher.predict(x[:900])
    assert agree.mean() > 0.85


def test_soft_cross_entropy_and_kl_match_their_formulas(digits):
    x, _, teacher = digits
    probs = teacher_probabilities(teacher, x[:50], temperature=2.0)
    logits = teacher.decision_function(x[:50]) / 2.0
    ref = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, ref / ref.sum(1, keepdims=True), rtol=1e-5)
    s = torch.randn(50, 10, dtype=torch.float64)
    t = torch.as_tensor(probs, dtype=torch.float64)
    expected = -(t * torch.log_softmax(s / 2.0, 1)).sum(1).mean() * 4.0
    torch.testing.assert_close(soft_cross_entropy(s, t, 2.0), expected)
    student = make_student()
    q = torch.softmax(predict_logits(student, x[:50]).double() / 2.0, 1).numpy()
    kl = np.mean(np.sum(probs * (np.log(probs) - np.log(q)), axis=1))
    assert kl_to_teacher(student, x[:50], probs, 2.0) == pytest.approx(kl, rel=1e-5)


def test_specialized_student_learns_top_classes_and_other(digits):
    x, y, _ = digits
    cmap = ClassMap.from_labels(y[:1200], n_top=3, n_classes=10)
    torch.manual_seed(0)
    student = make_student(n_classes=cmap.n_top + 1)
    train_specialized(
        student, cmap, x[:1200], y[:1200], x[1200:1500], y[1200:1500], epochs=20, progress=False
    )
    pred = predict_logits(student, x[1500:]).argmax(1).numpy()
    assert np.mean(pred == cmap.to_student(y[1500:])) > 0.85


def test_distill_errors(digits):
    x, _, teacher = digits
    with pytest.raises(InputError, match="temperature must be positive"):
        teacher_probabilities(teacher, x[:20], temperature=0.0)
    with pytest.raises(InputError, match="at least 10 inputs"):
        distill(make_student(), teacher, x[:5])
    with pytest.raises(InputError, match=r"val_fraction must lie in \(0, 1\)"):
        distill(make_student(), teacher, x[:50], val_fraction=1.0)
