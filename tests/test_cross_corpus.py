"""Tests of ser_jax/cross_corpus.py and cross-corpus evaluation (evaluation.run_evaluation
with `data=`, launch/evaluate.py --data).

The class mapping and the masked scoring are checked on hand-made logits; then a tiny
RAVDESS-trained model (tests/test_train.py's TinyNet, 8 classes, trained on the synthetic
RAVDESS speech clips of `corpora_data_dir`) is evaluated end to end on each real mini
corpus (TESS, SAVEE, EmoDB, RAVDESS song), and the command line is run once.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import test_evaluate  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
import test_train
from ser_jax import config_lib
from ser_jax import cross_corpus
from ser_jax import errors
from ser_jax import evaluation
from ser_jax import labels
from ser_jax import models
from ser_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
V = labels.VOCABULARY.index


def test_class_map_by_emotion_name():
  assert labels.class_names(9) == list(labels.VOCABULARY) and labels.VOCABULARY[8] == 'boredom'
  assert labels.class_names(8) == list(labels.EMOTIONS) and labels.class_names(3)[0] == 'class_0'
  tess = [V(e) for e in labels.CORPUS_EMOTIONS['tess']]
  m = cross_corpus.class_map(8, tess * 3)
  assert m.used == (0, 2, 3, 4, 5, 6, 7) and m.masked == (V('calm'),) and not m.excluded
  assert m.names == ['neutral', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
  emodb = [V(e) for e in labels.CORPUS_EMOTIONS['emodb']]
  m = cross_corpus.class_map(8, emodb)
  assert m.masked == (V('calm'), V('surprised')) and m.excluded == (V('boredom'),)
  assert 'boredom' not in m.names and len(m.names) == 6
  assert m.notes(3)[-1] == 'Clips of emotions the model lacks, not scored: 3 (boredom).'
  song = list(range(6))  # RAVDESS song: neutral .. fearful
  m = cross_corpus.class_map(9, song)  # a 9-class (boredom) model
  assert m.used == tuple(range(6)) and m.masked == (6, 7, 8)
  assert 'disgust, surprised, boredom' in m.notes()[1]
  with pytest.raises(errors.UserError, match='share no emotion'):
    cross_corpus.class_map(2, [V('angry'), V('sad')])  # neutral, calm only
  with pytest.raises(errors.UserError, match='beyond ser_jax.labels.VOCABULARY'):
    cross_corpus.class_map(12, [0])


def test_score_masks_the_classes_the_target_lacks():
  cmap = cross_corpus.class_map(4, [0, 2, 3])  # the target has no class 1 (calm)
  # Row 0: class 1 has the largest logit; among the shared classes, 2 wins.
  logits = np.array([[0.0, 9.0, 2.0, 1.0],   # true 2 -> predicted 2 (not 1)
                     [3.0, 8.0, 0.0, 1.0],   # true 0 -> predicted 0
                     [0.0, 7.0, 4.0, 1.0]])  # true 3 -> predicted 2
  m = cross_corpus.score(logits, np.array([2, 0, 3]), cmap)
  assert m['confusion'] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]  # classes 0, 2, 3
  assert m['accuracy'] == pytest.approx(2 / 3)
  assert m['recall'] == pytest.approx((1 + 1 + 0) / 3)  # UAR over the 3 shared classes
  shared = logits[:, [0, 2, 3]]
  log_p = shared - np.log(np.exp(shared).sum(-1, keepdims=True))
  assert m['loss'] == pytest.approx(-np.mean([log_p[0, 1], log_p[1, 0], log_p[2, 2]]))
  with pytest.raises(ValueError, match='scorable'):
    cross_corpus.score(logits[:1], np.array([1]), cmap)
  assert cross_corpus.scorable(np.array([1, 0, 5, 3]), cmap).tolist() == [1, 3]


def test_default_speakers():
  c = config_lib.default()  # RAVDESS speech, the predecessor's folds
  assert cross_corpus.default_speakers(c, 'ser_tess', 0) == 'all'
  assert cross_corpus.default_speakers(c, 'ravdess/song', 1) == (5, 13, 16, 18, 20, 23)
  with pytest.raises(errors.UserError, match='--fold=<i> or --actors'):
    cross_corpus.default_speakers(c, 'ravdess/song', None)
  c.data.extra_train = ('ser_tess',)
  with pytest.raises(errors.UserError, match=r'trained on ser_tess \(config.data.extra_train'):
    cross_corpus.default_speakers(c, 'ser_tess', 0)
  assert cross_corpus.default_speakers(c, 'ser_savee', 0) == 'all'


# ----------------------------------------------------------------------------- end to end

_RUN = {}


@pytest.fixture
def ravdess_run(corpora_data_dir, tmp_path_factory, monkeypatch):
  """A tiny 8-class model trained on corpora_data_dir's RAVDESS speech, fold test actor 2."""
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  if 'workdir' not in _RUN:
    config = test_train.tiny_config(**{
        'model.num_classes': 8, 'folds.test_actors': (2,), 'num_epochs': 1,
        'data.data_dir': corpora_data_dir, 'data.download': False})
    workdir = tmp_path_factory.mktemp('ravdess_run')
    train.train_and_evaluate(config, workdir)
    _RUN['workdir'] = workdir
  return _RUN['workdir']


# target -> (scored clips, masked classes, excluded clips, test speakers)
TARGETS = {
    'ser_tess': (45, ['calm'], 0, ['tess:OAF', 'tess:YAF']),
    'ser_savee': (28, ['calm'], 0, ['savee:DC', 'savee:JK']),
    'ser_emodb': (17, ['calm', 'surprised'], 3, ['emodb:03', 'emodb:08', 'emodb:09']),
    'ravdess/song': (11, ['disgust', 'surprised'], 0, [2]),  # the fold's held-out actor
}


@pytest.mark.slow
@pytest.mark.parametrize('data', list(TARGETS))
def test_ravdess_model_on_each_mini_corpus(ravdess_run, data):
  scored, masked, excluded, speakers = TARGETS[data]
  [m] = evaluation.run_evaluation(workdir=ravdess_run, data=data)
  names = [e for e in labels.EMOTIONS if e not in masked]
  assert m['classes'] == names and len(m['confusion']) == len(names)
  assert m['num_examples'] == sum(map(sum, m['confusion'])) == scored
  assert m['test_actors'] == speakers
  assert 0.0 <= m['recall'] <= 1.0 and np.isfinite(m['eval_loss'])
  out = pathlib.Path(m['report_dir'])
  assert out.parent == ravdess_run / 'evaluate' / data.replace('/', '_')
  for name in ('report.json', 'report.md', 'confusion_matrix.png'):
    assert (out / name).stat().st_size > 0, name
  md = (out / 'report.md').read_text()
  assert f"Classes scored ({len(names)}): {', '.join(names)}." in md
  assert f"masked (logits -inf): {', '.join(masked)}." in md
  assert ('not scored: 3 (boredom)' in md) == bool(excluded)
  assert 'Cross-corpus: a model trained on ravdess/speech evaluated on' in md
  report = json.loads((out / 'report.json').read_text())
  assert report['class_names'] == names and report['classes'] == names
  assert [pc['support'] for pc in report['per_class']] == [
      sum(row) for row in report['confusion']]


@pytest.mark.slow
def test_evaluate_command_line_on_another_corpus(corpora_data_dir, tmp_path_factory,
                                                 tmp_path):
  weights, _ = test_evaluate.cnnx_weights(tmp_path_factory)  # CNN-X :tiny, random weights
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
      'PYTHONPATH', '')]))
  out = subprocess.run(
      [sys.executable, str(ROOT / 'launch' / 'evaluate.py'),
       f'--config={ROOT / "configs" / "cnnx.py"}:tiny', f'--weights={weights}',
       '--data=ser_savee', f'--data_dir={corpora_data_dir}', f'--output_dir={tmp_path}'],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Classes scored (7): neutral, happy, sad, angry, fearful, disgust, surprised.' in (
      out.stdout)
  assert 'speakers savee:DC, savee:JK, 28 clips' in out.stdout
  report = json.loads((tmp_path / 'ser_savee' / 'evaluation' / 'report.json').read_text())
  assert report['num_examples'] == 28 and len(report['confusion']) == 7
