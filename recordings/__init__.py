"""A group of trajectories (`Group`: what rollout.py collects and tgrpo.py trains on), its recording (one .npz
holding what the reward file saw), and rescoring recordings with a reward file, confined as in training: the one
code that rescore.py and gen_reward.py --recordings share. The format is in the README ("Rescoring").
"""

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

import rewards
from cli import UsageError

WRITERS = "rollout.py, tgrpo.py --save-groups or evaluate.py --save-episodes"


@dataclass
class Group:
    """N trajectories of one task from one init state, padded to the longest; `mask` marks real steps."""

    suite: str
    task_name: str
    instruction: str
    init_state_id: int
    images: np.ndarray  # (N, T, H, W, 3) uint8: the observation each action was chosen from
    tokens: np.ndarray  # (N, T, 7) int64 action token ids
    log_probs: np.ndarray  # (N, T) float32, sampling log-probs summed over the 7 tokens
    rewards: np.ndarray  # (N, T) float32 dense rewards from the reward file
    mask: np.ndarray  # (N, T) bool, True where the step exists
    success: np.ndarray  # (N,) bool
    lengths: np.ndarray  # (N,) int
    failed: np.ndarray  # (N,) bool: the env crashed or hung
    timing: dict = field(default_factory=dict)  # seconds: simulation (reward calls included), policy, other, total
    # What the reward file saw, to rescore the group with another file (rescore.py): its `info`, one per trajectory
    # (None for an env that failed its reset), and each step's `state` (rewards/README.md), in step order.
    reward_infos: list = field(default_factory=list)
    reward_states: list = field(default_factory=list)
    reward_file: Optional[str] = ""  # the file that scored it (None: nothing did, as in evaluation), and its sha256
    reward_sha256: Optional[str] = ""

    @property
    def returns(self) -> np.ndarray:
        return (self.rewards * self.mask).sum(axis=1)

    def save(self, path) -> None:
        """One .npz: the arrays under their names, everything else in `meta`, a JSON string (reward_infos and
        reward_states as rewards.encode_state writes them). load_group reads it back. Written to a temporary
        name first, so that a run stopped mid-write leaves no half file among the recordings."""
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        meta = {k: rewards.encode_state(v) for k, v in vars(self).items() if not isinstance(v, np.ndarray)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as file:
            np.savez(file, **arrays, meta=json.dumps(meta))
        os.replace(partial, path)


def load_group(path, images: bool = True) -> Group:
    """A group Group.save wrote; with images=False its frames stay on disk (rescoring needs none) and `images`
    is (N, T, 0, 0, 3). A file that is no recording is a UsageError naming it."""
    try:
        with np.load(path) as saved:
            meta = {k: rewards.decode_state(v) for k, v in json.loads(str(saved["meta"])).items()}
            arrays = {k: saved[k] for k in saved.files if k != "meta" and (images or k != "images")}
            if not images:
                arrays["images"] = np.zeros((*saved["mask"].shape, 0, 0, 3), np.uint8)
            return Group(**arrays, **meta)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        why = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise UsageError(f"{path}: not a readable recording ({why}); give .npz files that {WRITERS} wrote") from None


def load_recording(path) -> Group:
    """A group to rescore: without its frames, and with what the reward file saw (a UsageError if it lacks it)."""
    group = load_group(path, images=False)
    if not group.reward_states:
        raise UsageError(f"{path}: recorded before groups kept their reward states; record it again")
    return group


def find_recordings(paths: tuple) -> list:
    """The .npz files among `paths` and below the folders among them; a UsageError if a path is missing or there
    is no .npz at all."""
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        files += sorted(path.rglob("*.npz")) if path.is_dir() else [path]
    if not files:
        given = " ".join(paths) or "no recording given"
        raise UsageError(f"{given}: no recorded group (.npz) there; give group files or folders holding them")
    return files


def rescore_group(process: rewards.RewardProcess, reward_path: str, source: str, group: Group) -> np.ndarray:
    """The group's step rewards (N, T) under the reward file (`reward_path` names it in messages; `source` is its
    text), run in `process` with the recorded infos and states."""
    scored = np.zeros(group.mask.shape, np.float32)
    for i, (info, states) in enumerate(zip(group.reward_infos, group.reward_states)):
        if info is None or group.failed[i]:
            continue  # a crashed env: left out of the update, as in training
        process.load(reward_path, source, info)
        for t, state in enumerate(states):
            scored[i, t] = process.call(state, env_index=i)
    return scored


def outcomes(groups: list, scored: list) -> tuple:
    """(returns, success) of the trajectories of `groups` that ran to their end (a crashed env's is left out, as
    in training), under `scored`, one (N, T) array of step rewards per group."""
    ran = [~group.failed for group in groups]
    returns = np.concatenate([(r * g.mask).sum(1)[v] for r, g, v in zip(scored, groups, ran)])
    success = np.concatenate([g.success[v] for g, v in zip(groups, ran)]).astype(bool)
    return returns, success
