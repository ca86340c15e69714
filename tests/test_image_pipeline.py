"""The policy's image pipeline against OpenVLA's own, which runs in TensorFlow.

The references in tests/data/image_pipeline/ are real LIBERO agentview frames and what upstream's TF code
path makes of them; tests/data/make_image_references.py made both and says how to remake them.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import openvla_image

DATA = Path(__file__).resolve().parent / "data" / "image_pipeline"
NUM_FRAMES = 5


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name))


@pytest.fixture(scope="module")
def frames_and_references():
    return [(load(f"frame_{i}.png"), load(f"tf_reference_{i}.png")) for i in range(NUM_FRAMES)]


def test_preprocess_image_equals_tensorflow_references(frames_and_references):
    differences = []
    for frame, reference in frames_and_references:
        image = openvla_image.preprocess_image(frame)
        assert image.shape == reference.shape == (224, 224, 3) and image.dtype == np.uint8
        differences.append(np.abs(image.astype(int) - reference.astype(int)).ravel())
    difference = np.concatenate(differences)
    print(
        f"vs TF: mean {difference.mean():.6f}, max {difference.max()}, "
        f"{100 * np.mean(difference > 0):.4f}% of {difference.size} values differ"
    )
    # What remains is float32 summation order in the lanczos3 resize, which moves a value across a rounding
    # edge now and then; JPEG and the crop match TF exactly.
    assert difference.max() <= 1
    assert np.mean(difference == 0) >= 0.999


def test_banded_resize_equals_the_full_matrix_product():
    values = np.random.default_rng(0).uniform(0, 255, size=(256, 768)).astype(np.float32)
    full = openvla_image.lanczos3_resize_matrix(256, 224).astype(np.float64) @ values
    np.testing.assert_allclose(openvla_image.resize_rows(values, 224), full, rtol=0, atol=1e-3)
    # Every row of weights sums to one, so a flat image stays flat.
    flat = np.full((256, 256, 3), 77, np.uint8)
    assert (openvla_image.resize_lanczos3(flat, 224) == 77).all()


def test_input_frame_is_left_untouched_and_layout_does_not_matter(frames_and_references):
    frame, _ = frames_and_references[0]
    before = frame.copy()
    strided = np.zeros((256, 512, 3), np.uint8)
    strided[:, ::2] = frame  # the same frame as a non-contiguous view
    assert np.array_equal(openvla_image.preprocess_image(strided[:, ::2]), openvla_image.preprocess_image(frame))
    assert np.array_equal(frame, before)
