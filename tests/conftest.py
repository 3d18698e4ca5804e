"""Shared pytest fixtures.

`ravdess_mini` points at a small real RAVDESS subset (actors 01-04, speech) when the machine
has one; tests that need it skip cleanly otherwise. Set RAVDESS_MINI_DIR to use another copy.
"""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mini_dir():
  env = os.environ.get("RAVDESS_MINI_DIR")
  candidates = [pathlib.Path(env)] if env else []
  candidates.append(REPO_ROOT.parent / "shared" / "ravdess-mini")
  for c in candidates:
    if (c / "Actor_01").is_dir():
      return c
  return None


@pytest.fixture(scope="session")
def ravdess_mini():
  d = _mini_dir()
  if d is None:
    pytest.skip("real RAVDESS subset not available (set RAVDESS_MINI_DIR)")
  return d
