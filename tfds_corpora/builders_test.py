"""The corpus builders on their dummy_data/, in the spirit of tfds.testing.DatasetBuilderTestCase.

`DatasetBuilderTestCase` subclasses `tf.test.TestCase`, so it needs TensorFlow, which this
project never installs; these pytest tests check the same things without it: every
builder builds its dummy data, split sizes, feature specs, decoded values and labels.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_corpora
from ser_jax import features
from ser_jax import labels
from tfds_corpora import builder as builder_lib

HERE = pathlib.Path(__file__).parent
# file_name -> (emotion, speaker, gender, corpus_label, extra features) per builder.
EXPECTED = {
    "ser_tess": {
        "OAF_back_angry.wav": ("angry", "tess:OAF", "female", "angry", {"word": "back"}),
        "OAF_back_ps.wav": ("surprised", "tess:OAF", "female", "ps", {"word": "back"}),
        "YAF_neat_fear.wav": ("fearful", "tess:YAF", "female", "fear", {"word": "neat"}),
        "YAF_back_neutral.wav": ("neutral", "tess:YAF", "female", "neutral",
                                 {"word": "back"}),
    },
    "ser_savee": {
        "DC_a01.wav": ("angry", "savee:DC", "male", "a", {}),
        "DC_n30.wav": ("neutral", "savee:DC", "male", "n", {}),
        "JE_su01.wav": ("surprised", "savee:JE", "male", "su", {}),
        "KL_sa15.wav": ("sad", "savee:KL", "male", "sa", {}),
    },
    "ser_emodb": {
        "03a01Fa.wav": ("happy", "emodb:03", "male", "F", {"text": "a01"}),
        "08b10Lc.wav": ("boredom", "emodb:08", "female", "L", {"text": "b10"}),
        "16a02Wb.wav": ("angry", "emodb:16", "female", "W", {"text": "a02"}),
    },
    "ser_crema_d": {  # genders from the dummy VideoDemographics.csv; 1091 is not in it
        "1001_DFA_ANG_XX.wav": ("angry", "crema_d:1001", "male", "ANG",
                                {"sentence": "DFA", "level": "XX"}),
        "1002_IEO_HAP_HI.wav": ("happy", "crema_d:1002", "female", "HAP",
                                {"sentence": "IEO", "level": "HI"}),
        "1040_ITH_SAD_XX.wav": ("sad", "crema_d:1040", "male", "SAD",  # file: ..._X.wav
                                {"sentence": "ITH", "level": "XX"}),
        "1091_WSI_NEU_LO.wav": ("neutral", "crema_d:1091", "unknown", "NEU",
                                {"sentence": "WSI", "level": "LO"}),
    },
}
LANGUAGE = {"ser_tess": "en", "ser_savee": "en", "ser_emodb": "de", "ser_crema_d": "en"}
# One front end per builder, so each front end is covered.
CONFIGS = [("ser_tess", "predecessor48k"), ("ser_savee", "panns32k"), ("ser_emodb", "panns16k"),
           ("ser_crema_d", "predecessor48k")]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("name, config", CONFIGS)
def test_build_from_dummy_data(name, config, tmp_path):
  builder = tfds.builder(f"{name}/{config}", data_dir=tmp_path, num_workers=0)
  dummy = HERE / name.removeprefix("ser_") / "dummy_data"
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=dummy))
  expected = EXPECTED[name]
  assert builder.info.splits["train"].num_examples == len(expected)
  ds = tfds.data_source(f"{name}/{config}", split="train", data_dir=tmp_path)
  fe = features.get_frontend(config)
  extra_keys = set(builder.info.features) - set(builder_lib.common_features(config))
  got = {}
  for i in range(len(ds)):
    ex = ds[i]
    assert set(ex) == set(builder.info.features)
    assert ex["log_mel"].dtype == np.float32
    assert ex["log_mel"].shape == (fe.n_mels, int(ex["num_frames"]))
    assert np.isfinite(ex["log_mel"]).all()
    assert ex["duration"] == pytest.approx(0.06, abs=1e-4)
    assert (_text(ex["corpus"]), _text(ex["language"])) == (name[4:], LANGUAGE[name])
    extra = {k: _text(ex[k]) for k in extra_keys}
    got[_text(ex["file_name"])] = (
        labels.VOCABULARY[int(ex["emotion"])], _text(ex["speaker"]),
        labels.GENDERS[int(ex["gender"])], _text(ex["corpus_label"]), extra)
  assert got == expected
  assert {e[0] for e in expected.values()} <= set(labels.CORPUS_EMOTIONS[name[4:]])


def test_log_mel_of_aiff_named_wav_is_its_content(tmp_path):
  """TESS's AIFF-in-.wav dummy clip: decoded by content, resampled to 48 kHz."""
  builder = tfds.builder("ser_tess/predecessor48k", data_dir=tmp_path, num_workers=0)
  dummy = HERE / "tess" / "dummy_data"
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=dummy))
  ds = tfds.data_source("ser_tess/predecessor48k", split="train", data_dir=tmp_path)
  ex = next(ds[i] for i in range(len(ds)) if ds[i]["file_name"] == b"YAF_neat_fear.wav")
  import soundfile as sf
  y, sr = sf.read(dummy / "YAF_fear" / "YAF_neat_fear.wav", dtype="float32")
  assert sf.info(dummy / "YAF_fear" / "YAF_neat_fear.wav").format == "AIFF" and sr == 24414
  import librosa
  want = features.log_mel(librosa.resample(y, orig_sr=sr, target_sr=48000,
                                           res_type="soxr_hq"), "predecessor48k")
  np.testing.assert_allclose(ex["log_mel"], want, atol=1e-4)


def test_names_cannot_collide_with_the_tfds_catalog():
  """TFDS's catalog has its own `savee` and `crema_d`: ours must never be mistaken for them."""
  for name, cls in tfds_corpora.BUILDERS.items():
    assert name.startswith("ser_") and tfds.builder_cls(name) is cls
  assert tfds.builder_cls("savee") is not tfds_corpora.BUILDERS["ser_savee"]
  # Without `import tfds_corpora`, TFDS knows none of our names (so a forgotten import
  # fails instead of loading another dataset).
  code = ("import tensorflow_datasets as tfds\n"
          "for n in %r:\n"
          "  try:\n    tfds.builder_cls(n); print('FOUND', n)\n"
          "  except tfds.core.registered.DatasetNotFoundError: print('missing', n)\n"
          % sorted(tfds_corpora.BUILDERS))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, check=True, cwd="/")
  assert out.stdout.split() == [w for n in sorted(tfds_corpora.BUILDERS)
                                for w in ("missing", n)]


def test_build_cli_without_tensorflow(tmp_path):
  """`python -m tfds_corpora ser_crema_d` runs TFDS's `build` command (the `tfds` CLI needs TF)."""
  repo = HERE.parent
  env = dict(os.environ, TFDS_DISABLE_PROGRESS_BAR="1",
             PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run(
      [sys.executable, "-m", "tfds_corpora", "ser_crema_d", "--config=panns16k",
       f"--data_dir={tmp_path}", f"--manual_dir={HERE / 'crema_d' / 'dummy_data'}"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  ds = tfds.data_source("ser_crema_d/panns16k", split="train", data_dir=tmp_path)
  assert len(ds) == len(EXPECTED["ser_crema_d"])


def test_dummy_data_is_small():
  files = sorted(p for p in HERE.glob("*/dummy_data/**/*") if p.is_file())
  assert len(files) == 16
  assert sum(f.stat().st_size for f in files) < 200_000


def test_without_data_says_where_to_get_it(tmp_path, monkeypatch):
  from tfds_corpora import sources
  monkeypatch.delenv("SAVEE_DIR", raising=False)
  builder = tfds.builder("ser_savee/predecessor48k", data_dir=tmp_path, num_workers=0)
  with pytest.raises(sources.CorpusInputError) as e:
    builder.download_and_prepare()
  msg = str(e.value)
  assert "No SAVEE files given: set SAVEE_DIR" in msg and "AudioData.zip" in msg
  assert "kahlan.eps.surrey.ac.uk/savee" in msg and not builder.is_prepared()
  monkeypatch.setenv("SAVEE_DIR", str(tmp_path / "missing"))
  with pytest.raises(sources.CorpusInputError, match=r"SAVEE folder .*missing does not exist"):
    builder.download_and_prepare()
