"""Tests of ser_jax/inference.py's prediction (launch/predict.py): input expansion, errors,
and probabilities that equal the model applied to the training transform of each file's
log-mel.

Reuses tests/test_evaluate.py's tiny trained run (a BatchNorm CNN registered in the model
registry) and its CNN-X weights for the command-line test.
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

import test_evaluate  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
from ser_jax import checkpoints  # pylint: disable=g-bad-import-order
from ser_jax import errors
from ser_jax import features
from ser_jax import inference as predict
from ser_jax import input_pipeline
from ser_jax import model_init
from ser_jax import models

ROOT = test_evaluate.ROOT


def _write_clips(folder):
  """Clips of several rates, channel counts and lengths (one far shorter than RAVDESS)."""
  rng = np.random.default_rng(1)
  t = lambda sr, s: np.arange(int(sr * s)) / sr  # pylint: disable=unnecessary-lambda-assignment
  (folder / 'sub').mkdir(parents=True)
  paths = {
      'mono16k': folder / 'a_16k.wav',
      'stereo44k': folder / 'sub' / 'B_44K.WAV',
      'short48k': folder / 'c_short.wav',
  }
  sf.write(paths['mono16k'], (0.3 * np.sin(2 * np.pi * 440 * t(16000, 1.3))
                              + 0.01 * rng.standard_normal(20800)).astype(np.float32), 16000)
  sf.write(paths['stereo44k'], 0.1 * rng.standard_normal((30870, 2)).astype(np.float32), 44100)
  sf.write(paths['short48k'], 0.2 * rng.standard_normal(960).astype(np.float32), 48000)
  return paths


@pytest.fixture
def run(tmp_path_factory, monkeypatch):
  monkeypatch.setitem(models.MODELS, test_evaluate.TINY, test_evaluate.TinyBNNet)
  return test_evaluate.trained_run(tmp_path_factory)


def test_collect_files(tmp_path):
  paths = _write_clips(tmp_path)
  (tmp_path / 'notes.txt').write_text('x')
  files, problems = predict.collect_files([str(tmp_path)])
  # Recursive, case-insensitive '*.wav', sorted, no text file.
  assert files == sorted(paths.values()) and not problems
  files, problems = predict.collect_files(
      [str(paths['short48k']), str(tmp_path / '**' / '*.WAV'), str(paths['short48k']),
       str(tmp_path / 'missing.wav'), str(tmp_path / 'none_*.wav')])
  assert files == [paths['short48k'], paths['stereo44k']]  # duplicates dropped
  assert problems == [f"{tmp_path / 'missing.wav'}: no such file or folder",
                      f"{tmp_path / 'none_*.wav'}: no file matches this pattern"]
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert predict.collect_files([str(empty)])[1] == [
      f"{empty}: folder holds no files matching '*.wav'"]


def test_predictions_equal_model_on_training_transform(run, tmp_path):
  workdir, config, _ = run
  paths = _write_clips(tmp_path / 'wavs')
  doc = predict.run_prediction([str(tmp_path / 'wavs')], workdir=workdir)
  assert doc['frontend'] == 'predecessor48k' and doc['model'] == test_evaluate.TINY
  assert doc['checkpoint'].startswith(str(checkpoints.checkpoint_dir(workdir, 0)))
  assert [p['file'] for p in doc['predictions']] == [str(p) for p in sorted(paths.values())]

  # Independently: decode at 48 kHz, the 128-mel front end, PyTorch-style bilinear resize to
  # the model's input, then the restored model.
  variables, _, _ = checkpoints.restore_fold(workdir, 0)
  model = model_init.build_model(config)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))  # one compile for all files
  fe = features.get_frontend('predecessor48k')
  for p in doc['predictions']:
    mel = features.log_mel(features.load_audio(p['file'], 48000), fe)  # (128, frames)
    image = input_pipeline.resize_bilinear(mel, config.data.input_shape)
    logits = apply(variables, image[None, :, :, None])
    expected = np.asarray(jax.nn.softmax(logits[0]))
    got = np.array([p['probabilities'][n] for n in doc['class_names']])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert p['emotion'] == doc['class_names'][int(np.argmax(expected))]
    assert p['probability'] == pytest.approx(expected.max(), rel=1e-5)
    assert p['frames'] == mel.shape[1]
  durations = {pathlib.Path(p['file']).name: p['duration_s'] for p in doc['predictions']}
  assert durations == {'a_16k.wav': 1.3, 'B_44K.WAV': 0.7, 'c_short.wav': 0.02}

  table = predict.format_table(doc)
  lines = table.splitlines()
  assert lines[0].split() == ['file', 'emotion', 'prob', *doc['class_names']]
  assert len(lines) == 2 + 3 + 1
  first = doc['predictions'][0]
  assert lines[2].split()[:3] == [first['file'], first['emotion'],
                                  f"{first['probability']:.3f}"]


def test_prediction_errors(run, tmp_path):
  workdir, _, _ = run
  paths = _write_clips(tmp_path / 'wavs')
  bad = tmp_path / 'wavs' / 'broken.wav'
  bad.write_bytes(b'RIFF but not really a wav file')
  with pytest.raises(errors.UserError, match=r'missing\.wav: no such file'):
    predict.run_prediction([str(paths['mono16k']), str(tmp_path / 'missing.wav')],
                           workdir=workdir)
  with pytest.raises(errors.UserError, match=r'cannot decode.*broken\.wav'):
    predict.run_prediction([str(tmp_path / 'wavs')], workdir=workdir)
  # Missing and undecodable inputs of one call: one error names all of them (issue 11,
  # item 15), and --skip_errors lists all of them.
  inputs = [str(tmp_path / 'missing.wav'), str(tmp_path / 'wavs'), str(tmp_path / 'gone/*.wav')]
  with pytest.raises(errors.UserError) as e:
    predict.run_prediction(inputs, workdir=workdir)
  lines = [line.strip() for line in str(e.value).splitlines()]
  assert lines == ['cannot use 3 of the inputs (--skip_errors uses the others):',
                   f'{tmp_path}/missing.wav: no such file or folder',
                   f'{tmp_path}/gone/*.wav: no file matches this pattern', lines[3]]
  assert lines[3].startswith(f'{bad}: cannot decode')
  skipped = predict.run_prediction(inputs, workdir=workdir, skip_errors=True)
  assert skipped['errors'] == lines[1:] and len(skipped['predictions']) == 3
  doc = predict.run_prediction([str(tmp_path / 'wavs'), str(tmp_path / 'missing.wav')],
                               workdir=workdir, skip_errors=True)
  assert len(doc['predictions']) == 3 and len(doc['errors']) == 2
  assert any('broken.wav' in e for e in doc['errors'])
  assert 'skipped: ' in predict.format_table(doc)
  with pytest.raises(errors.UserError, match='no fold checkpoints'):
    empty = tmp_path / 'empty_run'
    empty.mkdir()
    (empty / 'config.json').write_text((workdir / 'config.json').read_text())
    predict.run_prediction([str(paths['mono16k'])], workdir=empty)
  with pytest.raises(errors.UserError, match='exactly one of --workdir'):
    predict.run_prediction([str(paths['mono16k'])])
  with pytest.raises(errors.UserError, match='give one or more'):
    predict.run_prediction([], workdir=workdir)
  config = checkpoints.read_config(workdir)
  config.data.frontend = 'mfcc'
  with pytest.raises(errors.UserError, match=r"config.data.frontend: Unknown front end 'mfcc'"):
    predict.run_prediction([str(paths['mono16k'])], config=config, workdir=workdir)


@pytest.mark.slow
def test_command_line_json_and_errors(tmp_path_factory, tmp_path):
  weights, _ = test_evaluate.cnnx_weights(tmp_path_factory)
  paths = _write_clips(tmp_path / 'wavs')
  cmd = [sys.executable, str(ROOT / 'launch' / 'predict.py'),
         f'--config={ROOT / "configs" / "cnnx.py"}:tiny', f'--weights={weights}']
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.run(cmd + ['--format=json', str(tmp_path / 'wavs')], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  doc = json.loads(proc.stdout)  # stdout is pure JSON; logs went to stderr
  assert [p['file'] for p in doc['predictions']] == [str(p) for p in sorted(paths.values())]
  for p in doc['predictions']:
    assert sum(p['probabilities'].values()) == pytest.approx(1.0, abs=1e-5)
    assert p['emotion'] in doc['class_names'] and len(doc['class_names']) == 8

  missing = subprocess.run(cmd + [str(tmp_path / 'gone.wav')], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=env)
  assert missing.returncode != 0
  assert 'predict.py: error:' in missing.stderr and 'gone.wav' in missing.stderr
  assert 'Traceback' not in missing.stderr
