"""OpenVLA's LIBERO image pipeline, reproduced without TensorFlow.

OpenVLA's LIBERO checkpoints only ever saw frames prepared by TensorFlow ops (JPEG round trip, lanczos3
resize, crop_and_resize). The helpers below redo each op in numpy, in float32 and in TF's order of
operations; tests/test_image_pipeline.py holds the result to references made with TensorFlow itself
(tests/data/make_image_references.py says how to remake them).
"""

import io
import math
from functools import lru_cache

import numpy as np
import simplejpeg
from PIL import Image

JPEG_QUALITY = 95  # tf.image.encode_jpeg's default, which OpenVLA's evaluation uses
# uint8 -> float32 in [0, 1] exactly as tf.image.convert_image_dtype computes it: value * float32(1/255).
UINT8_TO_UNIT_FLOAT = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255)
UINT8_TO_UNIT_FLOAT.setflags(write=False)


def jpeg_round_trip(image: Image.Image) -> np.ndarray:
    """JPEG encode and decode, with the same pixels as TF's encode_jpeg + decode_image.

    PIL's encoder writes the same entropy-coded data as TF's (quality 95, 4:2:0 chroma). The decoders
    differ: TF uses libjpeg's fast integer IDCT with smooth chroma upsampling, which PIL cannot select and
    simplejpeg can.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
    return simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False)


def lanczos3_kernel(distance: np.ndarray) -> np.ndarray:
    """TF's lanczos3 kernel, evaluated in float32 with its terms in TF's order."""
    x = np.abs(distance).astype(np.float32)
    pi, radius = np.float32(np.pi), np.float32(3)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = radius * np.sin(pi * x) * np.sin(pi * x / radius) / (pi * pi * x * x)
    weight = np.where(x <= 1e-3, np.float32(1), weight)  # sinc's limit at 0
    return np.where(x > radius, np.float32(0), weight).astype(np.float32)


@lru_cache(maxsize=None)
def lanczos3_resize_matrix(input_size: int, output_size: int) -> np.ndarray:
    """Weights of tf.image.resize(method="lanczos3", antialias=True) along one axis, (output, input).

    Built once per shape the way TF builds its spans: sample points at pixel centers in float32, the kernel
    stretched by the shrink factor (that is the antialias), each row normalized to sum to one.
    """
    inv_scale = np.float32(1.0 / np.float64(np.float32(output_size) / np.float32(input_size)))
    kernel_scale = max(inv_scale, np.float32(1))  # stretch the kernel only when shrinking
    support = np.float32(3) * kernel_scale
    matrix = np.zeros((output_size, input_size), np.float32)
    for row in range(output_size):
        center = np.float32(row + 0.5) * inv_scale
        first = max(math.ceil(center - support - np.float32(0.5)), 0)
        last = min(math.floor(center + support - np.float32(0.5)), input_size - 1)
        offsets = np.arange(first, last + 1, dtype=np.float32) + np.float32(0.5) - center
        weights = lanczos3_kernel(offsets * (np.float32(1) / kernel_scale))
        total = np.cumsum(weights, dtype=np.float32)[-1]  # summed in order, as TF does
        matrix[row, first : last + 1] = weights * (np.float32(1) / total)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=None)
def lanczos3_resize_blocks(input_size: int, output_size: int, rows_per_block: int = 8) -> tuple:
    """The resize matrix cut into bands: (output rows, the input rows they read, their weights) per block.

    Multiplying band by band skips the zeros (each output reads ~9 of 256 inputs) and keeps every product
    small enough for OpenBLAS to compute it on the calling thread. One large product wakes its helper
    thread, which then spins for ~0.1 s of CPU after each call (measured): in an env worker, most of a
    core lost at every step.
    """
    matrix = lanczos3_resize_matrix(input_size, output_size)
    blocks = []
    for first in range(0, output_size, rows_per_block):
        weights = matrix[first : first + rows_per_block]
        used = np.flatnonzero(weights.any(axis=0))
        inputs = slice(used[0], used[-1] + 1)
        blocks.append((slice(first, first + len(weights)), inputs, np.ascontiguousarray(weights[:, inputs])))
    return tuple(blocks)


def resize_rows(values: np.ndarray, output_size: int) -> np.ndarray:
    """Lanczos3-resize a float32 (rows, n) array along its rows: `lanczos3_resize_matrix @ values`."""
    resized = np.empty((output_size, values.shape[1]), np.float32)
    for outputs, inputs, weights in lanczos3_resize_blocks(values.shape[0], output_size):
        np.matmul(weights, values[inputs], out=resized[outputs])
    return resized


def resize_lanczos3(image: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resize to (size, size) with lanczos3 and antialias, then round, clip and cast to uint8.

    Both passes stay in float32 until the final rounding, as in TF (PIL rounds to uint8 between them).
    """
    height, width, channels = image.shape
    # Rows first, as TF (the other order moves a few more values across a rounding edge), then columns,
    # with the columns brought to the front so that both passes are the same row operation.
    resized = resize_rows(image.reshape(height, width * channels).astype(np.float32), size)
    resized = resize_rows(resized.reshape(size, width, channels).transpose(1, 0, 2).reshape(width, -1), size)
    np.round(resized, out=resized)  # half to even, as tf.round
    np.clip(resized, 0, 255, out=resized)
    return resized.reshape(size, size, channels).transpose(1, 0, 2).astype(np.uint8, order="C")


@lru_cache(maxsize=None)
def center_crop_sampling(size: int, channels: int, area: float) -> tuple:
    """Where tf.image.crop_and_resize samples the centered box of `area` (a fraction of the image) to make
    a (size, size) output: the source rows before and after each output row and the fraction of the way
    between them; the same for columns, as indices into a row of `size * channels` values.

    TF maps the box's edges onto the outer pixel centers (the `size - 1` terms) and computes in float32.
    """
    side = np.sqrt(np.float32(area))
    start = (np.float32(1) - side) / np.float32(2)
    end = start + side
    step = (end - start) * np.float32(size - 1) / np.float32(size - 1)
    positions = start * np.float32(size - 1) + np.arange(size, dtype=np.float32) * step
    before, after = np.floor(positions).astype(np.int64), np.ceil(positions).astype(np.int64)
    fraction = positions - before.astype(np.float32)
    sampling = (
        before,
        after,
        fraction[:, None],
        (before[:, None] * channels + np.arange(channels)).ravel(),
        (after[:, None] * channels + np.arange(channels)).ravel(),
        np.repeat(fraction, channels)[None, :],
    )
    for array in sampling:
        array.setflags(write=False)
    return sampling


def center_crop(image: np.ndarray, area: float) -> np.ndarray:
    """OpenVLA's center crop: crop_and_resize (bilinear) of the centered box of `area` back to the image's
    size, then convert_image_dtype to uint8, which scales by 255.5 and truncates (PIL rounds)."""
    size, _, channels = image.shape
    row_before, row_after, row_fraction, col_before, col_after, col_fraction = center_crop_sampling(
        size, channels, area
    )
    rows = image.reshape(size, size * channels)
    # TF's arithmetic in its order, every step rounded to float32: between columns, then between rows
    # (interpolating every source row once gives the same numbers as TF's per-output-row loop).
    # In place, because fresh arrays of this size cost page faults on every frame.
    left = UINT8_TO_UNIT_FLOAT.take(rows.take(col_before, axis=1))
    across = UINT8_TO_UNIT_FLOAT.take(rows.take(col_after, axis=1))
    across -= left
    across *= col_fraction
    across += left
    top, bottom = across.take(row_before, axis=0), across.take(row_after, axis=0)
    bottom -= top
    bottom *= row_fraction
    bottom += top
    np.clip(bottom, 0, 1, out=bottom)
    bottom *= np.float32(255.5)
    return bottom.astype(np.uint8).reshape(size, size, channels)


def preprocess_image(agentview: np.ndarray, size: int = 224, center_crop_area: float = 0.9) -> np.ndarray:
    """OpenVLA's LIBERO image pipeline: rotate 180 degrees, JPEG round trip, lanczos3 resize, center crop.

    Upstream's TensorFlow pipeline without TensorFlow: equal to it but for about 1 value in 100,000, which
    is 1 gray level off (float32 sums in another order). tests/test_image_pipeline.py checks it.
    """
    image = Image.fromarray(agentview).transpose(Image.Transpose.ROTATE_180)  # LIBERO renders upside down
    image = resize_lanczos3(jpeg_round_trip(image), size)
    # The LIBERO checkpoints were trained with random crops of 90% area; evaluate on the center one.
    return center_crop(image, center_crop_area)
