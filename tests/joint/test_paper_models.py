"""The paper's own DenseNet-BC checkpoints on the real CIFAR test images."""

import numpy as np
import pytest
import torch

from ebjr.joint import JointModel
from ebjr.routing import get_router
from ebjr.training import predict_logits
from ebjr.zoo.densenet import DenseNetBC, cifar_preprocess, load_ebjr_checkpoint
from helpers import MODELS, PAPER_PAIRS, checkpoint, shared_file

STORED_ACCURACY = {  # best_acc stored in each checkpoint, in percent
    ("cifar10", 52, 6): 91.80,
    ("cifar10", 64, 12): 94.76,
    ("cifar100", 58, 6): 69.28,
    ("cifar100", 88, 8): 74.70,
}


#: rows of each test set run through our DenseNet here: every 14th (the full sets take minutes)
CHECKED_ROWS = slice(0, None, 14)


def _stored(dataset: str, depth: int, growth: int) -> np.ndarray:
    name = f"{dataset}{'-classorder' if dataset == 'cifar100' else ''}"
    return np.load(MODELS / "logits" / f"{name}_ebjr-densenet-bc-{depth}-{growth}.npz")["logits"]


@pytest.fixture(scope="module")
def outputs():
    """Logits of all four checkpoints on the full test sets: our DenseNet-BC's on every 14th
    image (checked against the logits published beside the checkpoints), the published ones
    for the rest. Equal logits on 715 real images are a stronger check than equal accuracy."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    for dataset, (images, classes, s, t) in PAPER_PAIRS.items():
        z = np.load(shared_file(images))
        x = cifar_preprocess(z["images"][CHECKED_ROWS])
        for depth, growth in (s, t):
            model = load_ebjr_checkpoint(checkpoint(dataset, depth, growth), depth, growth, classes)
            ours = predict_logits(model, x, 100).numpy()
            stored = _stored(dataset, depth, growth)
            np.testing.assert_allclose(ours, stored[CHECKED_ROWS], rtol=1e-4, atol=1e-3)
            out[(dataset, depth, growth)] = (stored, z["labels"])
    return out


@pytest.mark.integration
@pytest.mark.parametrize("key", list(STORED_ACCURACY))
def test_checkpoints_give_their_stored_accuracy(outputs, key):
    logits, labels = outputs[key]
    acc = 100 * np.mean(logits.argmax(1) == labels)
    assert round(acc, 2) == STORED_ACCURACY[key]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("dataset", "threshold", "student_share", "accuracy"),
    [("cifar10", 2.46, 72.03, 94.77), ("cifar100", 4.6195, 56.73, 74.79)],
)
def test_paper_code_router_reproduces_its_readme(
    outputs, dataset, threshold, student_share, accuracy
):
    _, _, s, t = PAPER_PAIRS[dataset]
    s_logits, labels = outputs[(dataset, *s)]
    t_logits, _ = outputs[(dataset, *t)]
    rows = np.arange(len(labels))
    joint = JointModel(lambda b: s_logits[b], lambda b: t_logits[b], "paper_code", threshold)
    out = joint.predict(rows)
    assert round(100 * (1 - out.to_teacher.mean()), 2) == student_share
    assert round(100 * np.mean(out.predictions == labels), 2) == accuracy


def test_architecture_matches_the_checkpoint_layout():
    # 20 + 36 n state-dict entries and the channel counts of the checkpoints' README
    for (depth, growth), fc_in in {(52, 6): 87, (64, 12): 216, (58, 6): 97, (88, 8): 200}.items():
        m = DenseNetBC(depth, growth, 10)
        n = (depth - 4) // 6
        assert len(m.state_dict()) == 20 + 36 * n
        assert m.fc.in_features == fc_in
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        DenseNetBC(50, 6)
    assert get_router("paper_code").name == "paper_code"


def test_pixel_input_equals_preprocessing_then_the_model():
    torch.manual_seed(0)
    plain = DenseNetBC(16, 4, 10).eval()
    pixels = DenseNetBC(16, 4, 10, pixel_input=True).eval()
    pixels.load_state_dict(plain.state_dict(), strict=True)  # same weights, no extra keys
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        want = plain(cifar_preprocess(images))
        got = pixels(torch.from_numpy(images.astype(np.float32)))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="pixels of shape"):
        pixels(torch.zeros(1, 3, 32, 32))
