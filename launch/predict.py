r"""Predicts the emotion of wav files with a trained checkpoint or imported weights.

  python launch/predict.py --workdir=workdirs/cnnx clip.wav other.wav
  python launch/predict.py --workdir=workdirs/cnnx --fold=2 recordings/      # a folder
  python launch/predict.py --workdir=workdirs/cnnx 'data/**/*.wav' --format=json
  python launch/predict.py --config=configs/cnnx.py --weights=imported/predecessor_cnnx clip.wav

Inputs: files, folders (searched recursively for `--pattern`, default `*.wav`, any case)
and glob patterns (quote them; `**` recurses). Audio of any sample rate, channel count and
length is decoded, downmixed and resampled to the model's front end (`config.data.name`,
e.g. `ravdess/speech_predecessor48k` -> the 48 kHz 128-mel front end of `ser_jax.features`), then
goes through the same input transform as training's evaluation (`ser_jax.input_pipeline`:
bilinear resize to `config.data.input_shape`, or centre crop / pad with a mask).

Output (stdout): a table with each file's predicted emotion, its probability and every
class's probability (default), or `--format=json`. Logs go to stderr.

A missing or undecodable file stops the run before the model is loaded, naming every such
file (`--skip_errors` predicts the others and lists the failures instead). A workdir
without checkpoints, weights of another model, or a model/config mismatch are reported as
errors, not tracebacks.

With a workdir, the checkpoint of `--fold` is used (default: the lowest fold that has one;
each fold's model was trained without that fold's held-out actors).
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import json
import logging
import os
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

log = logging.getLogger('predict')


def _load_evaluate():
  """launch/evaluate.py (the checkpoint and inference helpers), loaded by path."""
  name = 'ser_jax_launch_evaluate'
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(
      name, pathlib.Path(__file__).resolve().with_name('evaluate.py'))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


evaluate = _load_evaluate()
PredictionError = evaluate.EvaluationError


# ----------------------------------------------------------------------------- inputs


def collect_files(inputs: Sequence[str], pattern: str = '*.wav'
                  ) -> tuple[list[pathlib.Path], list[str]]:
  """Expands files, folders and globs; returns (files in order, problems).

  Problems name each input that does not exist or matches nothing.
  """
  files, problems = [], []
  for item in inputs:
    path = pathlib.Path(item)
    if path.is_dir():
      found = sorted(p for p in path.rglob('*')
                     if p.is_file() and fnmatch.fnmatch(p.name.lower(), pattern.lower()))
      if not found:
        problems.append(f'{item}: folder holds no files matching {pattern!r}')
      files += found
    elif path.is_file():
      files.append(path)
    elif glob.has_magic(item):
      found = sorted(pathlib.Path(p) for p in glob.glob(item, recursive=True)
                     if os.path.isfile(p))
      if not found:
        problems.append(f'{item}: no file matches this pattern')
      files += found
    elif path.exists():
      problems.append(f'{item}: not a regular file')
    else:
      problems.append(f'{item}: no such file or folder')
  unique, seen = [], set()
  for f in files:
    key = f.resolve()
    if key not in seen:
      seen.add(key)
      unique.append(f)
  return unique, problems


def extract_features(files: Sequence[pathlib.Path], frontend
                     ) -> tuple[list[tuple[pathlib.Path, np.ndarray, float]], list[str]]:
  """(file, log-mel `(n_mels, frames)`, seconds) per decodable file, and the failures."""
  from ser_jax import features  # pylint: disable=g-import-not-at-top
  done, problems = [], []
  for path in files:
    try:
      wave = features.load_audio(path, frontend.sample_rate)  # (samples,)
    except features.AudioDecodeError as e:
      problems.append(str(e))
      continue
    except OSError as e:
      problems.append(f'{path}: cannot read ({e})')
      continue
    done.append((path, features.log_mel(wave, frontend), len(wave) / frontend.sample_rate))
  return done, problems


def frontend_for(config):
  """The `ser_jax.features` front end of `config.data.name` (e.g. '..._predecessor48k')."""
  from ser_jax import features  # pylint: disable=g-import-not-at-top
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  name = pretrained.frontend_name(config.data.name)
  if name is None:
    raise PredictionError(f'config.data.name={config.data.name!r} names no known front end '
                          f'(expected a suffix among {sorted(features.FRONTENDS)})')
  return features.get_frontend(name)


# ----------------------------------------------------------------------------- predict


def predict(config, variables: dict, clips, class_names: Sequence[str]) -> list[dict]:
  """Class probabilities of `(file, log_mel, seconds)` clips; one dict per clip."""
  from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  n = len(clips)
  examples = input_pipeline.Examples(
      images=[mel for _, mel, _ in clips],
      labels=np.zeros(n, np.int32),  # unknown; only the probabilities are used
      actors=np.zeros(n, np.int32),
      file_names=[str(path) for path, _, _ in clips])
  out = evaluate.predict_examples(config, variables, examples)
  results = []
  for (path, mel, seconds), probs in zip(clips, out['probabilities']):
    best = int(np.argmax(probs))
    results.append({
        'file': str(path),
        'emotion': class_names[best],
        'probability': float(probs[best]),
        'probabilities': {name: float(p) for name, p in zip(class_names, probs)},
        'duration_s': round(float(seconds), 3),
        'frames': int(mel.shape[1]),
    })
  return results


def run_prediction(inputs: Sequence[str], *, config=None, workdir=None, fold=None,
                   step=None, weights=None, pattern: str = '*.wav',
                   skip_errors: bool = False) -> dict[str, Any]:
  """Everything `main` does except printing; returns the JSON document.

  Raises:
    PredictionError: bad inputs (all named), no checkpoint, mismatched model.
  """
  if not inputs:
    raise PredictionError('give one or more wav files, folders or glob patterns')
  if (weights is None) == (workdir is None):
    raise PredictionError('pass exactly one of --workdir (a training run) or --weights '
                          '(imported weights, with --config)')
  config = evaluate.load_config(config, workdir)
  frontend = frontend_for(config)

  files, problems = collect_files(inputs, pattern)
  if problems and not skip_errors:
    raise PredictionError('cannot use these inputs:\n  ' + '\n  '.join(problems))
  clips, bad = extract_features(files, frontend)
  problems += bad
  if bad and not skip_errors:
    raise PredictionError('cannot decode these files as audio:\n  ' + '\n  '.join(bad))
  for p in problems:
    log.warning('skipped %s', p)
  if not clips:
    raise PredictionError('no audio to predict (every input was skipped)')

  if weights is not None:
    variables = evaluate.load_weights(config, weights)
    source = str(weights)
  else:
    if fold is None:
      have = evaluate.available_folds(workdir) if pathlib.Path(workdir).is_dir() else []
      if not have:
        raise PredictionError(f'{workdir} holds no fold checkpoints '
                              '(expected fold_<i>/checkpoints/<step>/)')
      fold = have[0]
    variables, _, used_step = evaluate.restore_fold(workdir, fold, step, config)
    source = f'{evaluate.checkpoint_dir(workdir, fold)}/{used_step}'
  class_names = evaluate.class_names(config)
  return {
      'model': config.model.name,
      'checkpoint': source,
      'frontend': frontend.name,
      'class_names': list(class_names),
      'predictions': predict(config, variables, clips, class_names),
      'errors': problems,
  }


def format_table(doc: dict) -> str:
  """A fixed-width table: file, emotion, its probability, then every class's probability."""
  names = doc['class_names']
  rows = doc['predictions']
  width = max([len('file')] + [len(r['file']) for r in rows])
  ew = max([len('emotion')] + [len(n) for n in names])
  cols = [max(len(n), 5) for n in names]
  head = (f"{'file':<{width}}  {'emotion':<{ew}}  {'prob':>5}  "
          + '  '.join(f'{n:>{w}}' for n, w in zip(names, cols)))
  lines = [head, '-' * len(head)]
  for r in rows:
    lines.append(f"{r['file']:<{width}}  {r['emotion']:<{ew}}  {r['probability']:5.3f}  "
                 + '  '.join(f"{r['probabilities'][n]:>{w}.3f}" for n, w in zip(names, cols)))
  lines.append(f"({len(rows)} file{'s' if len(rows) != 1 else ''}; model {doc['model']} "
               f"from {doc['checkpoint']})")
  for e in doc['errors']:
    lines.append(f'skipped: {e}')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- CLI


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if not f['verbosity'].present:
    # Orbax and JAX log at INFO on every restore; keep stderr for what matters.
    absl_logging.set_verbosity(absl_logging.WARNING)
  config = _CONFIG.value
  try:
    if config is None and f.workdir:
      config = evaluate.load_config(None, f.workdir)
    if config is not None and f.batch_size:
      config.eval_batch_size = f.batch_size
    doc = run_prediction(argv[1:], config=config, workdir=f.workdir or None, fold=f.fold,
                         step=f.step, weights=f.weights or None, pattern=f.pattern,
                         skip_errors=f.skip_errors)
  # User-facing failures (missing data or checkpoint, unknown model, mismatched weights)
  # as one line, not a traceback.
  except (PredictionError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f'predict.py: error: {e}') from None
  if f.format == 'json':
    print(json.dumps(doc, indent=2))
  else:
    print(format_table(doc))


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  global _CONFIG
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, "Experiment config file; default: the workdir's config.json.",
      lock_config=False)
  flags.DEFINE_string('workdir', '', 'Training run whose fold checkpoint predicts.')
  flags.DEFINE_integer('fold', None, 'Fold checkpoint to use; default: the lowest one.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
  flags.DEFINE_string('weights', '', 'Imported weights (launch/import_weights.py directory '
                      'or .pth with --config.init.source) instead of --workdir.')
  flags.DEFINE_enum('format', 'table', ['table', 'json'], 'Output format on stdout.')
  flags.DEFINE_string('pattern', '*.wav', 'File pattern searched in folders (any case).')
  flags.DEFINE_boolean('skip_errors', False, 'Predict the readable files and list the '
                       'missing/undecodable ones instead of stopping.')
  flags.DEFINE_integer('batch_size', None, 'Inference batch size (config.eval_batch_size).')


_CONFIG = None

if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
