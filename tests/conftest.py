"""Shared fixtures: the repo on sys.path, and one tiny VLA built from scratch for the whole session."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A fresh TGRPO_CACHE, so `--model tiny` is built through the real build path once per session."""
    cache = tmp_path_factory.mktemp("tgrpo_cache")
    previous = os.environ.get("TGRPO_CACHE")
    os.environ["TGRPO_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("TGRPO_CACHE", None)
    else:
        os.environ["TGRPO_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_policy(tiny_cache):
    import rollout

    return rollout.load_vla("tiny", "libero_goal", device="cpu")


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:robosuite")
