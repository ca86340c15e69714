"""Make the reference images that tests/test_image_pipeline.py checks `openvla_image.preprocess_image` against.

OpenVLA's LIBERO evaluation prepares each agentview frame with TensorFlow: `get_libero_image` (rotate
180 degrees, then `resize_image`: JPEG encode/decode, lanczos3 resize with antialias to 224, clip, round,
cast), then the center crop of `get_vla_action` (`crop_and_resize` to 0.9 of the area, back to 224). The
project reproduces this without TensorFlow; this script applies the TensorFlow ops once, to real frames,
so the test can compare the two.

Two modes, because LIBERO and TensorFlow do not share an environment:

1. Capture raw 256x256 agentview frames with the project's own Python (LIBERO installed), from the repo
   root:

       python tests/data/make_image_references.py capture

   writes tests/data/image_pipeline/frame_<i>.png (lossless, exactly the env's uint8 observation).

2. Apply the TensorFlow pipeline in a throwaway virtual environment outside the repo:

       python -m venv /tmp/tfenv
       /tmp/tfenv/bin/pip install tensorflow-cpu numpy pillow
       /tmp/tfenv/bin/python tests/data/make_image_references.py reference

   writes tests/data/image_pipeline/tf_reference_<i>.png (224x224). Made with tensorflow-cpu 2.21.0.

Both modes overwrite their outputs; rerun `reference` after `capture`. The frames are committed because
rendering can differ between GL drivers; the references depend only on the frames.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT_DIR = Path(__file__).resolve().parent / "image_pipeline"
REPO_ROOT = Path(__file__).resolve().parents[2]

# (suite, task id, init state, control steps after the settling wait, arm command held for those steps):
# one frame per suite, the arm in different places, so the frames differ in content and in detail.
FRAMES = [
    ("libero_spatial", 0, 0, 0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
    ("libero_object", 3, 1, 25, [0.4, 0.0, -0.3, 0.0, 0.0, 0.0, -1.0]),
    ("libero_goal", 8, 2, 40, [0.0, 0.5, -0.2, 0.0, 0.0, 0.3, 1.0]),
    ("libero_10", 5, 0, 15, [-0.3, -0.4, 0.2, 0.2, 0.0, 0.0, -1.0]),
    ("libero_90", 10, 3, 30, [0.5, 0.3, -0.5, 0.0, 0.2, 0.0, 1.0]),
]
CAMERA_SIZE = 256  # the resolution of OpenVLA's LIBERO evaluation
RESIZE_SIZE = 224
CENTER_CROP_AREA = 0.9


def capture_frames() -> None:
    sys.path.insert(0, str(REPO_ROOT))
    import libero_envs

    OUT_DIR.mkdir(exist_ok=True)
    for index, (suite, task_id, init_index, num_steps, command) in enumerate(FRAMES):
        task = libero_envs.get_task(suite, task_id)
        env = libero_envs.make_env(libero_envs.task_bddl_path(task), render=True, camera_size=CAMERA_SIZE)
        obs = libero_envs.reset_env(env, libero_envs.get_init_states(suite, task_id)[init_index])
        for _ in range(num_steps):
            obs, _, _, _ = env.step(np.array(command))
        frame = obs["agentview_image"]
        assert frame.shape == (CAMERA_SIZE, CAMERA_SIZE, 3) and frame.dtype == np.uint8
        Image.fromarray(frame).save(OUT_DIR / f"frame_{index}.png", optimize=True)
        env.close()
        print(f"frame_{index}.png: {suite} task {task_id} init state {init_index}, {num_steps} steps")


def tf_pipeline(frame: np.ndarray) -> np.ndarray:
    """The TensorFlow ops of OpenVLA's evaluation, in its order and with its arguments."""
    import tensorflow as tf

    image = frame[::-1, ::-1]  # LIBERO renders upside down
    # JPEG round trip (the training data went through JPEG), then lanczos3 to 224, back to uint8.
    image = tf.io.decode_image(tf.image.encode_jpeg(image), expand_animations=False, dtype=tf.uint8)
    image = tf.image.resize(image, (RESIZE_SIZE, RESIZE_SIZE), method="lanczos3", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    # Center crop of 0.9 of the area (side sqrt(0.9)) in normalized box coordinates, bilinear back to 224.
    image = tf.image.convert_image_dtype(image, tf.float32)
    side = tf.reshape(tf.clip_by_value(tf.sqrt(CENTER_CROP_AREA), 0, 1), shape=(1,))
    offset = (1 - side) / 2
    boxes = tf.stack([offset, offset, offset + side, offset + side], axis=1)
    image = tf.image.crop_and_resize(image[None], boxes, tf.range(1), (RESIZE_SIZE, RESIZE_SIZE))[0]
    image = tf.image.convert_image_dtype(tf.clip_by_value(image, 0, 1), tf.uint8, saturate=True)
    return image.numpy()


def make_references() -> None:
    import tensorflow as tf

    for index in range(len(FRAMES)):
        frame = np.asarray(Image.open(OUT_DIR / f"frame_{index}.png"))
        reference = tf_pipeline(frame)
        assert reference.shape == (RESIZE_SIZE, RESIZE_SIZE, 3) and reference.dtype == np.uint8
        Image.fromarray(reference).save(OUT_DIR / f"tf_reference_{index}.png", optimize=True)
    print(f"{len(FRAMES)} references written with tensorflow {tf.__version__}")


if __name__ == "__main__":
    modes = {"capture": capture_frames, "reference": make_references}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit(f"usage: {sys.argv[0]} capture|reference   (see the docstring)")
    modes[sys.argv[1]]()
