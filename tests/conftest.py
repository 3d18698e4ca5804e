"""Shared pytest fixtures.

`ravdess_mini` points at a small real RAVDESS subset (actors 01-04, speech) when the machine
has one; tests that need it skip cleanly otherwise. Set RAVDESS_MINI_DIR to use another copy.

Built datasets (session-scoped, built once; each returns a TFDS `data_dir` str holding
`ravdess/speech_predecessor48k`; read with
`tfds.data_source('ravdess/speech_predecessor48k', split='train', data_dir=...)`):
- `synthetic_data_dir`: 64 synthetic clips (actors 1-8 x emotions 1-8, 0.5 s, 48 kHz,
  see tests/synthetic.py) whose pitch identifies the emotion, so a model can fit them.
- `mini_data_dir`: the 240 real clips of `ravdess_mini` (skips when absent; ~20 s build).

`corpora_mini` points at real samples of TESS, SAVEE, EmoDB and RAVDESS song in their
distributed layouts (`CORPORA_MINI_DIR`, else `<repo>/../shared/corpora-mini`); tests that
need it skip cleanly when it is absent. `corpora_data_dir` is a TFDS data_dir with each of
them built (`CORPORA_DATASETS`, front end predecessor48k) plus `ravdess/speech` of the
synthetic clips above (~30 s build).
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


@pytest.fixture(scope="session")
def corpora_mini():
  env = os.environ.get("CORPORA_MINI_DIR")
  d = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "corpora-mini"
  if not (d / "tess").is_dir():
    pytest.skip("real corpus samples not available (set CORPORA_MINI_DIR)")
  return d


# TFDS name -> folder of corpora-mini (None: the synthetic RAVDESS speech clips).
CORPORA_DATASETS = {
    "ser_tess/predecessor48k": "tess",
    "ser_savee/predecessor48k": "savee",
    "ser_emodb/predecessor48k": "emodb",
    "ravdess/song_predecessor48k": "ravdess-song",
    "ravdess/speech_predecessor48k": None,
}


@pytest.fixture(scope="session")
def corpora_data_dir(corpora_mini, tmp_path_factory):
  import synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("corpora_tfds")
  synthetic.write_synthetic_ravdess(root / "wavs", actors=range(1, 9),
                                    emotions=range(1, 9), seconds=0.5)
  for name, folder in CORPORA_DATASETS.items():
    synthetic.build(name, root / "wavs" if folder is None else corpora_mini / folder,
                    root / "tfds")
  return str(root / "tfds")


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
  import synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("ravdess_synthetic")
  synthetic.write_synthetic_ravdess(root / "wavs", actors=range(1, 9),
                                    emotions=range(1, 9), seconds=0.5)
  synthetic.build_ravdess(root / "wavs", root / "tfds", "speech_predecessor48k")
  return str(root / "tfds")


@pytest.fixture(scope="session")
def mini_data_dir(ravdess_mini, tmp_path_factory):
  import synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("ravdess_mini_tfds")
  synthetic.build_ravdess(ravdess_mini, root, "speech_predecessor48k", num_workers=2)
  return str(root)
