"""AudioSet tagging and embeddings (`inference.run_tagging` / `run_embedding`, launch/tag.py and
launch/embed.py).

With the real EfficientAT mn04 checkpoint (skipped when absent): imported with its class
list, the tags and embeddings of real RAVDESS clips equal the model applied to the bare
clip, and every clip of ravdess-mini is tagged as speech (issue 13's acceptance test).
Without it: a tiny trained run with an embedding (the fine-tuned-workdir path) and the
one-line errors.
"""
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import numpy as np
import pytest
import soundfile as sf

import test_evaluate  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
from ser_jax import audioset  # pylint: disable=g-bad-import-order
from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import errors
from ser_jax import features
from ser_jax import inference
from ser_jax import models
from ser_jax import pretrained
from ser_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / 'shared' / 'weights' / 'efficientat'
CHECKPOINT = WEIGHTS / 'mn04_as_mAP_432.pt'
LABELS = WEIGHTS / audioset.LABELS_FILE
FE = features.FRONTENDS['efficientat32k']
SPEECH = {0, 1, 2, 3}  # 'Speech' and its children (male, female, child speech)


@pytest.fixture(scope='module')
def mn04(tmp_path_factory):
  """(import directory with the class list, its variables) of the real mn04_as checkpoint."""
  if not (CHECKPOINT.exists() and LABELS.exists()):
    pytest.skip(f'{CHECKPOINT} or {LABELS} not available')
  config = config_lib.default()
  config.model.name, config.model.num_classes = 'efficientat_mn04', audioset.NUM_CLASSES
  config.data.frontend, config.init.source = 'efficientat32k', 'efficientat_mn'
  out = tmp_path_factory.mktemp('mn04') / 'mn04_as'
  pretrained.import_to_directory(config, CHECKPOINT, out, labels_file=LABELS)
  assert (out / audioset.LABELS_FILE).read_bytes() == LABELS.read_bytes()
  return out, pretrained.restore_imported(out, frontend='efficientat32k')


@pytest.fixture(scope='module')
def clips(ravdess_mini, tmp_path_factory):
  """Two real clips as 32 kHz float WAVs: `long` trimmed to a multiple of 32 frames (so the
  whole-clip batch pads it by nothing), `short` half as long; and their log-mels."""
  d = tmp_path_factory.mktemp('clips')
  first, second = sorted(ravdess_mini.glob('Actor_01/*.wav'))[:2]
  y = features.load_audio(first, FE.sample_rate)
  frames = features.clip_to_features(y, FE.sample_rate, FE)[0].shape[1]
  n = len(y)
  while features.clip_to_features(y[:n], FE.sample_rate, FE)[0].shape[1] != frames // 32 * 32:
    n -= FE.hop_length // 4
  paths = {'long': d / 'long.wav', 'short': d / 'short.wav'}
  sf.write(paths['long'], y[:n], FE.sample_rate, subtype='FLOAT')
  sf.write(paths['short'], features.load_audio(second, FE.sample_rate)[:n // 2],
           FE.sample_rate, subtype='FLOAT')
  mel, _ = inference.load_clip(paths['long'], FE)
  short, _ = inference.load_clip(paths['short'], FE)
  assert mel.shape[1] % 32 == 0 and short.shape[1] < mel.shape[1]  # short gets padded
  return paths, mel, short


def _bare_outputs(variables, mel):
  """(logits (527,), embedding (384,)) of mn04 on one unpadded log-mel."""
  model = models.get_model('efficientat_mn04', num_classes=audioset.NUM_CLASSES)
  x = mel[None, :, :, None]
  return (np.asarray(model.apply(variables, x))[0],
          np.asarray(model.apply(variables, x, method='embed'))[0])


def test_tags_are_the_models_sigmoid_scores(mn04, clips):
  out, variables = mn04
  paths, mel, short = clips
  doc = inference.run_tagging([str(paths['long']), str(paths['short'])], weights=out, k=5)
  assert [t['file'] for t in doc['tags']] == [str(paths['long']), str(paths['short'])]
  logits, _ = _bare_outputs(variables, mel)
  want = np.argsort(-logits)[:5]
  names = audioset.read_labels(LABELS)
  top = doc['tags'][0]['top']
  assert [t['index'] for t in top] == want.tolist()
  assert [t['label'] for t in top] == [names[i] for i in want]
  np.testing.assert_allclose([t['score'] for t in top], 1 / (1 + np.exp(-logits[want])),
                             atol=1e-5)
  for entry in doc['tags']:  # both clips are speech
    assert {t['index'] for t in entry['top'][:3]} & SPEECH, entry
  # `short` was padded to `long`'s length in the run's batch, yet scores as if alone.
  short_logits, _ = _bare_outputs(variables, short)
  short_top = doc['tags'][1]['top']
  assert [t['index'] for t in short_top] == np.argsort(-short_logits)[:5].tolist()
  np.testing.assert_allclose([t['score'] for t in short_top],
                             1 / (1 + np.exp(-short_logits[[t['index'] for t in short_top]])),
                             atol=1e-5)
  assert json.loads(json.dumps(doc)) == doc
  table = inference.format_tags(doc)
  assert f"{paths['long']} (" in table and f"  {top[0]['score']:.3f}  {top[0]['label']}" in table


def test_embeddings_npz_and_never_overwritten(mn04, clips, tmp_path):
  out, variables = mn04
  paths, mel, short = clips
  npz = tmp_path / 'emb.npz'
  doc = inference.run_embedding([str(paths['long']), str(paths['short'])], npz, weights=out)
  assert doc['dim'] == 384 and doc['num_files'] == 2
  with np.load(npz) as z:
    assert sorted(z.files) == ['checkpoint', 'embeddings', 'files', 'frontend', 'model']
    assert z['embeddings'].shape == (2, 384) and z['embeddings'].dtype == np.float32
    assert z['files'].tolist() == [str(paths['long']), str(paths['short'])]
    assert str(z['model']) == 'efficientat_mn04' and str(z['frontend']) == 'efficientat32k'
    assert str(z['checkpoint']) == str(out)
    np.testing.assert_allclose(z['embeddings'][0], _bare_outputs(variables, mel)[1], atol=1e-5)
    np.testing.assert_allclose(z['embeddings'][1], _bare_outputs(variables, short)[1],
                               atol=1e-5)
    assert not np.allclose(z['embeddings'][0], z['embeddings'][1])
  before = npz.read_bytes()
  with pytest.raises(errors.UserError, match=r'emb\.npz exists; refusing to overwrite'):
    inference.run_embedding([str(paths['short'])], npz, weights=out)
  assert npz.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['emb.npz']  # no temporary left


def test_every_mini_clip_is_tagged_as_speech_through_tag_py(mn04, ravdess_mini):
  """Issue 13's acceptance: 'Speech' (0) or a child (1-3) is in the top 3 of all 240 clips,
  through launch/tag.py's library call on the original 48 kHz files."""
  out, _ = mn04
  doc = inference.run_tagging([str(ravdess_mini)], weights=out, k=3)
  assert len(doc['tags']) == 240 and not doc['errors']
  missed = [(t['file'], [x['label'] for x in t['top']]) for t in doc['tags']
            if not {x['index'] for x in t['top']} & SPEECH]
  assert not missed, missed


# --------------------------------------------------------------------------------------------
# Without the real checkpoint.


class TinyEmbedNet(nn.Module):
  """conv -> BatchNorm -> ReLU -> mean over (mel, time) = embedding (4) -> dense."""
  num_classes: int = test_evaluate.NUM_CLASSES
  dtype: object = None

  def setup(self):
    self.conv = nn.Conv(4, (3, 3), strides=2)
    self.bn = nn.BatchNorm()
    self.head = nn.Dense(self.num_classes)

  def embed(self, x, train=False, mask=None):  # pylint: disable=redefined-outer-name
    del mask
    return nn.relu(self.bn(self.conv(x), use_running_average=not train)).mean(axis=(1, 2))

  def __call__(self, x, train=False, mask=None):  # pylint: disable=redefined-outer-name
    return self.head(self.embed(x, train, mask))


def _write_wavs(folder, seconds=(0.6, 1.1)):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  paths = []
  for i, s in enumerate(seconds):
    paths.append(folder / f'clip{i}.wav')
    sf.write(paths[-1], (0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32), 16000)
  return paths


def test_embeddings_of_a_fine_tuned_workdir(tmp_path, monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny_embed', TinyEmbedNet)
  config = test_evaluate.tiny_config()
  config.model.name = 'tiny_embed'
  config.num_epochs = 1
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, workdir, examples=test_evaluate.synthetic_examples())
  wavs = _write_wavs(tmp_path / 'wavs')
  npz = tmp_path / 'ft.npz'
  doc = inference.run_embedding([str(tmp_path / 'wavs')], npz, workdir=workdir)
  assert doc['checkpoint'].startswith(str(checkpoints.checkpoint_dir(workdir, 0)))
  with np.load(npz) as z:
    assert z['embeddings'].shape == (2, 4) and z['files'].tolist() == [str(p) for p in wavs]
    assert str(z['model']) == 'tiny_embed' and str(z['frontend']) == config.data.frontend
    assert np.all(np.isfinite(z['embeddings']))


@pytest.fixture
def cnnx_import(tmp_path):
  """An import directory of an 8-class CNN-X (its record only: the errors come first) and a
  527-label class list."""
  d = tmp_path / 'cnnx_import'
  d.mkdir()
  (d / pretrained.IMPORT_INFO).write_text(json.dumps(
      {'model': 'cnnx', 'num_classes': 8, 'frontend': 'predecessor48k',
       'input_shape': [128, 256]}))
  labels = tmp_path / 'labels.csv'
  labels.write_text('index,mid,display_name\n' + ''.join(
      f'{i},/m/{i},label {i}\n' for i in range(audioset.NUM_CLASSES)))
  return d, labels, _write_wavs(tmp_path / 'wavs', seconds=(0.5,))


def test_errors_before_any_model_is_loaded(cnnx_import, tmp_path):
  d, labels, [wav] = cnnx_import
  cases = [
      (lambda: inference.run_tagging([str(wav)], weights=d),
       rf'no class_labels_indices\.csv in {d}: pass --labels='),
      (lambda: inference.run_tagging([str(wav)], weights=d, labels_file=labels),
       r"labels\.csv lists 527 labels but model 'cnnx' has 8 outputs"),
      (lambda: inference.run_embedding([str(wav)], tmp_path / 'e.npz', weights=d),
       r"model 'cnnx' has no pooled embedding to export"),
      (lambda: inference.run_embedding([str(wav)], tmp_path / 'e.npy', weights=d),
       r'e\.npy: expected a new \.npz file'),
      (lambda: inference.run_tagging([str(wav)], weights=tmp_path / 'gone'),
       r'weights .*gone do not exist'),
      (lambda: inference.run_tagging([str(tmp_path / 'missing.wav')], weights=d),
       r'cannot use 1 of the inputs'),
      (lambda: pretrained.import_to_directory(inference.resolve_config(weights=d), wav,
                                              tmp_path / 'imp', labels_file=labels),
       r'--labels=.*labels\.csv lists 527 labels, but the model has 8 outputs'),
  ]
  for call, message in cases:
    with pytest.raises(errors.UserError, match=message) as e:
      call()
    assert 'missing.wav' in str(e.value) or '\n' not in str(e.value)
  assert not (tmp_path / 'e.npz').exists() and not (tmp_path / 'imp').exists()


def test_command_lines_print_one_error_line(cnnx_import, tmp_path):
  d, labels, [wav] = cnnx_import
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  runs = {
      'tag.py': [f'--weights={d}', f'--labels={labels}', str(wav)],
      'embed.py': [f'--weights={d}', f'--output={tmp_path / "e.npz"}', str(wav)],
  }
  for launcher, args in runs.items():
    proc = subprocess.run([sys.executable, str(ROOT / 'launch' / launcher), *args],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'{launcher}: error: ') and 'cnnx' in last, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
