"""Tests of ser_jax/inference.py: clip -> features as the builder does, `Predictor`.

A 10 ms clip (shorter than the PANNs front ends' reflect padding) must get exactly the
builder's features from prediction (`features.clip_to_features` is the one place the
short-clip rule lives), and predicting it must work end to end. `Predictor.predict` takes
waveforms or log-mels and needs no labels. The model is test_train's tiny BatchNorm CNN,
registered in the model registry.
"""
import numpy as np
import pytest

import synthetic  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
import test_train
from ser_jax import config_lib
from ser_jax import features
from ser_jax import inference
from ser_jax import input_pipeline
from ser_jax import model_init
from ser_jax import models
from ser_jax import pretrained
from tfds_corpora import extract
from tfds_ravdess import sources

TEN_MS = 480  # samples at 48 kHz


@pytest.fixture
def short_clip(tmp_path):
  """A RAVDESS-named 10 ms clip at 48 kHz: (the folder holding it, the file)."""
  return tmp_path, synthetic.write_synthetic_ravdess(
      tmp_path, actors=[1], emotions=[3], seconds=TEN_MS / 48000)[0]


@pytest.mark.parametrize('frontend', sorted(features.FRONTENDS))
def test_short_clip_gets_the_builders_features(short_clip, frontend):
  root, wav = short_clip
  [source] = sources.find_sources(root, 'speech')
  built = extract.extract(0, source, frontend).values
  mel, seconds = inference.load_clip(wav, features.get_frontend(frontend))
  np.testing.assert_array_equal(mel, built['log_mel'])
  assert seconds == pytest.approx(0.01)
  assert mel.shape[0] == features.FRONTENDS[frontend].n_mels and np.isfinite(mel).all()


def test_clip_to_features_pads_only_what_reflect_padding_needs():
  fe = features.get_frontend('panns32k')
  y = np.linspace(-0.1, 0.1, 320, dtype=np.float32)  # 10 ms at 32 kHz
  mel, notes = features.clip_to_features(y, 32000, fe)
  want = features.log_mel(np.pad(y, (0, fe.n_fft // 2 + 1 - 320)), fe)
  np.testing.assert_array_equal(mel, want)
  assert notes == ['zero-padded 320 to 513 samples (shorter than the panns32k window)']
  long = np.linspace(-0.1, 0.1, 3200, dtype=np.float32)
  mel, notes = features.clip_to_features(long, 32000, fe)
  np.testing.assert_array_equal(mel, features.log_mel(long, fe))
  assert not notes
  # Another rate is resampled first (the note says so).
  _, notes = features.clip_to_features(long, 16000, fe)
  assert notes == ['resampled 16000 Hz to 32000 Hz']


def _panns_tiny_config():
  c = config_lib.default()
  c.model.name, c.model.num_classes = 'tiny', 4
  c.data.frontend, c.data.crop_mode, c.data.input_shape = 'panns32k', 'crop_pad', (64, 16)
  c.batch_size = c.eval_batch_size = 4
  return c


@pytest.fixture
def tiny(monkeypatch, tmp_path):
  """(config, variables, import directory) of an untrained tiny model on panns32k."""
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  config = _panns_tiny_config()
  variables = model_init.init_variables(config)
  weights = pretrained.save_imported(tmp_path / 'weights', variables,
                                     {'model': 'tiny', 'frontend': 'panns32k'})
  return config, variables, weights


def test_short_clip_predicts_end_to_end(short_clip, tiny):
  _, wav = short_clip
  config, _, weights = tiny
  doc = inference.run_prediction([str(wav)], config=config, weights=weights)
  [p] = doc['predictions']
  assert doc['frontend'] == 'panns32k' and not doc['errors']
  assert p['frames'] == features.clip_to_features(
      features.load_audio(wav, 32000), 32000, 'panns32k')[0].shape[1]
  assert sum(p['probabilities'].values()) == pytest.approx(1.0, abs=1e-6)


def test_predict_takes_waveforms_or_log_mels(tiny):
  config, variables, _ = tiny
  rng = np.random.default_rng(0)
  waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (200, 3200, 9000)]
  mels = [features.clip_to_features(w, 32000, 'panns32k')[0] for w in waves]
  predictor = inference.Predictor(config, variables)
  from_waves = predictor.predict(waves)
  assert from_waves.shape == (3, 4)
  np.testing.assert_allclose(from_waves.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(predictor.predict(mels), from_waves)
  # The same as applying the model to the evaluation transform (centre crop / pad).
  model = model_init.build_model(config)
  examples = input_pipeline.Examples(mels, np.zeros(3, np.int32), np.zeros(3, np.int32),
                                     [''] * 3)
  batch = next(input_pipeline.eval_batches(examples, config.data, batch_size=4))
  logits = np.asarray(model.apply(variables, batch['image'], train=False,
                                  mask=batch['mask']))[:3]  # (3, classes), padding dropped
  want = np.exp(logits - logits.max(-1, keepdims=True))
  np.testing.assert_allclose(from_waves, want / want.sum(-1, keepdims=True), rtol=1e-5,
                             atol=1e-6)
