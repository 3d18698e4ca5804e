"""Builder test against dummy_data/, in the spirit of tfds.testing.DatasetBuilderTestCase.

`DatasetBuilderTestCase` subclasses `tf.test.TestCase`, so it needs TensorFlow, which this
project never installs; this pytest module checks the same things without it: every
subset builds from the dummy data, split sizes, feature specs and decoded values.
"""
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_ravdess  # pylint: disable=unused-import

DUMMY_DATA = pathlib.Path(__file__).parent / "dummy_data"
# dummy_data/: actors 1-2, speech emotions 1, 5, 8 and song emotion 3 (strong).
SPLITS = {"speech": 6, "song": 2, "all": 8}


@pytest.mark.parametrize("config", ["speech_predecessor48k", "song_panns32k", "all_panns16k"])
def test_build_from_dummy_data(config, tmp_path):
  builder = tfds.builder(f"ravdess/{config}", data_dir=tmp_path, num_workers=0)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=DUMMY_DATA))
  subset = config.split("_")[0]
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": SPLITS[subset]}
  ds = tfds.data_source(f"ravdess/{config}", split="train", data_dir=tmp_path)
  n_mels = builder.info.features["log_mel"].shape[0]
  channels = set()
  for i in range(len(ds)):
    ex = ds[i]
    assert set(ex) == set(builder.info.features)
    assert ex["log_mel"].dtype == np.float32
    assert ex["log_mel"].shape == (n_mels, int(ex["num_frames"]))
    assert np.isfinite(ex["log_mel"]).all()
    name = ex["file_name"].decode()
    fields = [int(f) for f in name[:-4].split("-")]
    assert int(ex["emotion"]) == fields[2] - 1
    assert int(ex["actor"]) == fields[6]
    assert int(ex["vocal_channel"]) == fields[1] - 1
    assert ex["duration"] == pytest.approx(0.06, abs=1e-6)
    channels.add(int(ex["vocal_channel"]))
  assert channels == {"speech": {0}, "song": {1}, "all": {0, 1}}[subset]


def test_dummy_data_is_small():
  files = sorted(DUMMY_DATA.rglob("*.wav"))
  assert len(files) == 8
  assert sum(f.stat().st_size for f in files) < 1_000_000


def test_build_cli_without_tensorflow(tmp_path):
  """`python -m tfds_ravdess` runs TFDS's `build` command (the `tfds` CLI needs TF)."""
  import os
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, TFDS_DISABLE_PROGRESS_BAR="1",
             PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run(
      [sys.executable, "-m", "tfds_ravdess", "--config=song_predecessor48k",
       f"--data_dir={tmp_path}", f"--manual_dir={DUMMY_DATA}"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  ds = tfds.data_source("ravdess/song_predecessor48k", split="train", data_dir=tmp_path)
  assert len(ds) == SPLITS["song"]
  assert sorted((tmp_path / "ravdess" / "song_predecessor48k" / "2.0.0").glob("*.array_record*"))
