"""Running a model: load its variables, predict probabilities, evaluate labelled clips.

- `load_variables(config, workdir=..., fold=..., step=...)` or
  `load_variables(config, weights=...)`: the one way inference gets a model's variables,
  from a training checkpoint (`ser_jax.checkpoints.restore_fold`, which checks the model
  identity, front end included) or from imported weights (a `launch/import_weights.py`
  directory or a `.pth`, strictly merged into the model by `ser_jax.pretrained`, which
  checks them against `config.data.frontend`).
- `Predictor(config, variables)`: `.predict(waveforms or log-mels) -> probabilities`
  (no labels needed) and `.evaluate(examples) -> metrics`, through the same input
  transform (`ser_jax.input_pipeline`) and compiled evaluation step as training's
  held-out set (`evaluate_examples`, which training calls too).
- `load_clip(path, frontend)`: an audio file of any rate, channel count or length ->
  its log-mel, through `features.clip_to_features` exactly as the dataset builder does.
- `run_prediction(...)`: what launch/predict.py does (files, folders, globs -> a JSON
  document of per-file probabilities); `format_table` prints it.
- `run_tagging(...)` (launch/tag.py): the top-k AudioSet labels of each file with sigmoid
  scores from an AudioSet tagger (EfficientAT); `format_tags` prints them.
- `run_embedding(...)` (launch/embed.py): each file's pooled embedding (`Predictor.embeddings`,
  the model's `embed` method) into one new `.npz`.
Tagging and embedding see each clip whole (`whole_clip_config`), prediction the config's
input transform (what the classifier was trained on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import glob
import logging
import os
import pathlib
from typing import Any, Sequence

import jax
import numpy as np

from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import errors
from ser_jax import features
from ser_jax import input_pipeline
from ser_jax import labels
from ser_jax import model_init
from ser_jax import parallel
from ser_jax import steps

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- evaluation


def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis of `(N, C)` logits (float32 stays float32)."""
  z = np.exp(logits - logits.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def evaluate_examples(runner, state, examples: input_pipeline.Examples, config
                      ) -> dict[str, Any]:
  """Loss and predictions over every clip of `examples`, each counted exactly once.

  Args:
    runner: a `ser_jax.parallel` runner; `state` is placed by it.
    state: a TrainState (only params and batch_stats are used).
    examples: clips after `input_pipeline.prepare_images`.
    config: `data` (input transform), `eval_batch_size`, `model.num_classes`.

  Returns:
    `{'labels', 'predictions', 'probabilities' (softmax), 'logits', 'loss', 'accuracy',
    'num_examples'}`.
  """
  n = len(examples)
  labels_ = np.full(n, -1, np.int64)
  preds = np.full(n, -1, np.int64)
  logits_ = np.zeros((n, config.model.num_classes), np.float32)
  probs = np.zeros((n, config.model.num_classes), np.float32)
  loss_sum, seen = 0.0, 0
  batches = input_pipeline.eval_batches(
      examples, config.data, batch_size=config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  with contextlib.closing(input_pipeline.prefetch(batches)) as prefetched:
    for batch in prefetched:
      logits, losses = runner.evaluate(state, runner.place_batch(batch))  # global batch
      index = parallel.gather_hosts(batch['index'])
      valid = index >= 0
      idx = index[valid]
      if np.any(labels_[idx] >= 0):
        raise AssertionError('evaluation saw a clip twice')  # the pipeline guarantees once
      labels_[idx] = examples.labels[idx]
      preds[idx] = np.argmax(logits[valid], -1)
      logits_[idx] = logits[valid]
      probs[idx] = softmax(logits[valid])
      loss_sum += float(np.sum(losses[valid]))
      seen += int(valid.sum())
  if seen != n or np.any(labels_ < 0):
    raise AssertionError(f'evaluation covered {seen} of {n} clips')
  return {'labels': labels_, 'predictions': preds, 'probabilities': probs, 'logits': logits_,
          'loss': loss_sum / max(seen, 1),
          'accuracy': float(np.mean(labels_ == preds)) if seen else 0.0,
          'num_examples': seen}


def check_embeds(config, model=None) -> None:
  """Raises UserError unless the configured model has a pooled embedding (`embed`)."""
  model = model or model_init.build_model(config)
  if not callable(getattr(model, 'embed', None)):
    raise errors.UserError(f'model {config.model.name!r} has no pooled embedding to export '
                           '(an embed method; the efficientat_mn* models have one)')


class Predictor:
  """A model with fixed variables, compiled once for `config`'s evaluation batch layout.

  `with_variables` gives a Predictor of the same model with other variables (another
  fold's checkpoint) that reuses the compiled step.
  """

  def __init__(self, config, variables: dict, *, _runner=None):
    import optax  # pylint: disable=g-import-not-at-top
    self.config = config
    self._model = model_init.build_model(config)
    self._variables = variables
    self._runner = _runner or parallel.make_runner(config, self._model, jax.random.PRNGKey(0))
    self._state = self._runner.place_state(
        steps.create_state(self._model.apply, variables, optax.identity()))

  def with_variables(self, variables: dict) -> Predictor:
    return Predictor(self.config, variables, _runner=self._runner)

  def evaluate(self, examples: input_pipeline.Examples) -> dict[str, Any]:
    """`evaluate_examples` of every clip (after the config's input transform)."""
    if len(examples) == 0:
      raise errors.UserError('nothing to evaluate: the selection holds no clips')
    examples = input_pipeline.prepare_images(examples, self.config.data)
    return evaluate_examples(self._runner, self._state, examples, self.config)

  def predict(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities (softmax) `(N, num_classes)` of `inputs`.

    Args:
      inputs: waveforms (1-D float32 at the front end's sample rate) and/or log-mels
        (2-D `(n_mels, frames)` as `features.clip_to_features` returns them).
    """
    return self.evaluate(self._examples(inputs))['probabilities']

  def logits(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Logits `(N, num_classes)` of `inputs` (as in `predict`), e.g. for sigmoid tagging."""
    return self.evaluate(self._examples(inputs))['logits']

  def embeddings(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Pooled embeddings `(N, D)` float32 of `inputs` (as in `predict`): what the head reads.

    Raises:
      UserError: the model has no `embed` method (EfficientAT models have one).
    """
    check_embeds(self.config, self._model)
    use_mask = self.config.data.crop_mode == 'crop_pad'  # as the evaluation step does
    embed = jax.jit(lambda v, x, m: self._model.apply(
        v, x, train=False, mask=m if use_mask else None, method='embed'))
    examples = input_pipeline.prepare_images(self._examples(inputs), self.config.data)
    rows = []
    for batch in input_pipeline.eval_batches(examples, self.config.data,
                                             batch_size=self.config.eval_batch_size):
      out = embed(self._variables, batch['image'], batch['mask'])  # (B, D)
      rows.append(np.asarray(out, np.float32)[batch['valid']])
    return np.concatenate(rows)

  def _examples(self, inputs) -> input_pipeline.Examples:
    """Unlabelled `Examples` of waveforms and/or log-mels, through the one clip path."""
    fe = features.get_frontend(self.config.data.frontend)
    images = [x if np.ndim(x) == 2 else features.clip_to_features(x, fe.sample_rate, fe)[0]
              for x in inputs]
    n = len(images)
    return input_pipeline.Examples(
        images=[np.asarray(x, np.float32) for x in images],
        labels=np.zeros(n, np.int32),  # unknown; only the outputs are used
        actors=np.zeros(n, np.int32), file_names=[''] * n)


# ----------------------------------------------------------------------------- variables


@dataclasses.dataclass
class Loaded:
  """Variables for inference and where they came from."""
  variables: dict
  source: str  # the checkpoint step directory or the weights path
  meta: dict  # a training checkpoint's meta (epoch, history, ...); {} for weights
  step: int | None = None


def resolve_config(config=None, workdir: str | os.PathLike | None = None,
                   weights: str | os.PathLike | None = None):
  """The config to run with: `config` if given, else the workdir's `config.json`, else the
  model, classes, front end and input shape an import_weights directory records."""
  if config is not None:
    return config
  if workdir is not None:
    return checkpoints.read_config(workdir)
  if weights is not None and os.path.isdir(weights):
    return _config_of_import(weights)
  raise errors.UserError('pass --workdir (a training run), or --weights (an import_weights '
                         'directory, or a weights file with --config)')


def _config_of_import(path):
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  info = pretrained.read_import_info(path)
  if not all(info.get(k) for k in ('model', 'num_classes', 'frontend', 'input_shape')):
    raise errors.UserError(f'{path}: no {pretrained.IMPORT_INFO} with the model, classes, '
                           'front end and input shape; pass --config=configs/<model>.py')
  config = config_lib.default()
  config.model.name, config.model.num_classes = info['model'], int(info['num_classes'])
  config.data.frontend, config.data.input_shape = info['frontend'], tuple(info['input_shape'])
  return config


def load_variables(config, *, workdir=None, fold: int | None = None,
                   step: int | None = None, weights=None) -> Loaded:
  """The model's variables from a training checkpoint or from imported weights.

  Args:
    config: the model, its classes, input shape and front end.
    workdir, fold, step: a training run's fold checkpoint (step None: the latest).
    weights: instead, a launch/import_weights.py directory, or a `.pth`/`.pt` converted
      with `config.init.source`. Every model variable must come from it.

  Raises:
    UserError: no such checkpoint, weights of another model or front end.
  """
  _check_one_source(workdir, weights)
  if weights is None:
    variables, meta, used = checkpoints.restore_fold(workdir, fold, step, config)
    return Loaded(variables, f'{checkpoints.checkpoint_dir(workdir, fold)}/{used}', meta, used)
  return Loaded(_load_weights(config, pathlib.Path(weights)), str(weights), {})


def _check_one_source(workdir, weights) -> None:
  if (weights is None) == (workdir is None):
    raise errors.UserError('pass exactly one of --workdir (a training run) or --weights '
                           '(imported weights, with --config)')


def _load_weights(config, path: pathlib.Path) -> dict:
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  if not path.exists():
    raise errors.UserError(f'weights {path} do not exist')
  if path.is_dir():
    info = pretrained.read_import_info(path)
    recorded = info.get('model') or info.get('model_name')
    if isinstance(recorded, str) and recorded != config.model.name:
      raise errors.UserError(
          f'{path} holds weights imported for model {recorded!r}, but the config asks for '
          f'{config.model.name!r} (pass the matching --config=configs/<model>.py)')
    if info.get('fresh'):
      # A new head or stem imported untrained: its predictions are not meaningful yet.
      log.warning('%s: %d variables were freshly initialised at import, not trained (%s); '
                  'fine-tune before trusting these metrics', path, len(info['fresh']),
                  ', '.join(info['fresh'][:6]) + (' ...' if len(info['fresh']) > 6 else ''))
  shapes = model_init.init_variables(config, abstract=True)  # every leaf is replaced
  try:
    merged = pretrained.load_pretrained(path, shapes, frontend=config.data.frontend,
                                        source=config.init.get('source', ''))
  except errors.UserError as e:
    raise errors.CheckpointError(
        f'cannot load {path} into model {config.model.name!r} ({config.model.num_classes} '
        f'classes, input {tuple(config.data.input_shape)}, front end '
        f'{config.data.frontend!r}): {e}') from e
  return {'params': merged['params'], 'batch_stats': merged.get('batch_stats') or {}}


# ----------------------------------------------------------------------------- files


def collect_files(inputs: Sequence[str], pattern: str = '*.wav'
                  ) -> tuple[list[pathlib.Path], list[str]]:
  """Expands files, folders (recursively, `pattern` in any case) and globs.

  Returns:
    (files in order without duplicates, problems naming each input that does not exist
    or matches nothing).
  """
  files, problems = [], []
  for item in inputs:
    found, problem = _expand(item, pattern)
    files += found
    if problem:
      problems.append(f'{item}: {problem}')
  unique, seen = [], set()
  for f in files:
    if f.resolve() not in seen:
      seen.add(f.resolve())
      unique.append(f)
  return unique, problems


def _expand(item: str, pattern: str) -> tuple[list[pathlib.Path], str | None]:
  path = pathlib.Path(item)
  if path.is_dir():
    found = sorted(p for p in path.rglob('*')
                   if p.is_file() and fnmatch.fnmatch(p.name.lower(), pattern.lower()))
    return found, None if found else f'folder holds no files matching {pattern!r}'
  if path.is_file():
    return [path], None
  if glob.has_magic(item):
    found = sorted(pathlib.Path(p) for p in glob.glob(item, recursive=True)
                   if os.path.isfile(p))
    return found, None if found else 'no file matches this pattern'
  return [], 'not a regular file' if path.exists() else 'no such file or folder'


def load_clip(path: str | os.PathLike, frontend: features.FrontEnd
              ) -> tuple[np.ndarray, float]:
  """(log-mel `(n_mels, frames)`, seconds of audio) of an audio file, as the builder does.

  Raises:
    AudioDecodeError: the file does not decode as audio, or is damaged (truncated,
      NaN/Inf samples); a digitally silent clip is predicted with a logged warning.
  """
  decoded = features.read_audio(path, frontend.sample_rate, str(path))
  mel, more = features.clip_to_features(decoded.waveform, frontend.sample_rate, frontend)
  for note in list(decoded.notes) + [f'{path}: {m}' for m in more]:
    log.info(note)
  for warning in decoded.warnings:
    log.warning(warning)
  return mel, decoded.duration


def _load_clips(files, frontend):
  """[(file, log-mel, seconds)] of the decodable files, and the failures."""
  clips, problems = [], []
  for path in files:
    try:
      clips.append((path, *load_clip(path, frontend)))
    except features.AudioDecodeError as e:
      problems.append(str(e))  # names the file
    except OSError as e:
      problems.append(f'{path}: cannot read ({e})')
  return clips, problems


def run_prediction(inputs: Sequence[str], *, config=None, workdir=None, fold=None,
                   step=None, weights=None, pattern: str = '*.wav',
                   skip_errors: bool = False) -> dict[str, Any]:
  """Class probabilities of every audio file in `inputs`; returns a JSON-able document.

  With a workdir, the checkpoint of `fold` is used (default: the lowest fold that has
  one). Missing or undecodable files stop the run before the model is loaded, naming
  every such file, unless `skip_errors` (then they are listed under 'errors').

  Raises:
    UserError: bad inputs, no checkpoint, weights of another model or front end.
  """
  config, clips, problems = read_inputs(inputs, config=config, workdir=workdir,
                                        weights=weights, pattern=pattern,
                                        skip_errors=skip_errors)
  loaded = _load_for(config, workdir, fold, step, weights)
  probs = Predictor(config, loaded.variables).predict([mel for _, mel, _ in clips])
  names = labels.class_names(config.model.num_classes)
  return {'model': config.model.name, 'checkpoint': loaded.source,
          'frontend': config.data.frontend, 'class_names': names,
          'predictions': [_prediction(path, mel, seconds, p, names)
                          for (path, mel, seconds), p in zip(clips, probs)],
          'errors': problems}


def read_inputs(inputs: Sequence[str], *, config=None, workdir=None, weights=None,
                pattern: str = '*.wav', skip_errors: bool = False):
  """The config and the decoded audio of a prediction-like run, before any model is loaded.

  Returns:
    (config (`resolve_config`, validated), [(file, log-mel, seconds)], problems skipped).

  Raises:
    UserError: no inputs, not exactly one of workdir / weights, a bad config, or inputs
      that are missing or do not decode (all named in one message) unless `skip_errors`.
  """
  if not inputs:
    raise errors.UserError('give one or more wav files, folders or glob patterns')
  _check_one_source(workdir, weights)
  if weights is not None and not os.path.exists(weights):
    raise errors.UserError(f'weights {weights} do not exist')
  config = resolve_config(config, workdir, weights)
  config_lib.validate(config, num_devices=jax.device_count(), training=False)
  files, problems = collect_files(inputs, pattern)
  clips, bad = _load_clips(files, features.get_frontend(config.data.frontend))
  problems += bad  # every file was tried, so one error names them all
  if problems and not skip_errors:
    raise errors.UserError(f'cannot use {len(problems)} of the inputs (--skip_errors '
                           'uses the others):\n  ' + '\n  '.join(problems))
  for p in problems:
    log.warning('skipped %s', p)
  if not clips:
    raise errors.UserError('no audio to use (every input was skipped)')
  return config, clips, problems


def _load_for(config, workdir, fold, step, weights) -> Loaded:
  if workdir is not None and fold is None:
    fold = _lowest_fold(workdir)
  return load_variables(config, workdir=workdir, fold=fold, step=step, weights=weights)


# Multiple of the input length `whole_clip_config` pads to: EfficientAT's time stride, so
# the pooling mask covers whole map steps (a coarser model would need its own stride).
WHOLE_CLIP_FRAMES = 32


def whole_clip_config(config, clips):
  """`config` for seeing every clip whole: `crop_pad` to the longest of `clips`.

  For models that take any input length (EfficientAT pools over time; variables do not
  depend on the length, so they are loaded with the original config). The input is
  (the front end's mels, the longest clip's frames rounded up to `WHOLE_CLIP_FRAMES`);
  shorter clips are padded at the end, and models that take a mask (EfficientAT) compute
  each clip as if it were alone, so a clip's outputs do not depend on the other files of
  the run. Nothing is cut or resized; one shape is compiled per run.
  """
  frames = max(mel.shape[1] for _, mel, _ in clips)
  config = config.copy_and_resolve_references()
  config.data.crop_mode = 'crop_pad'
  config.data.input_shape = (features.get_frontend(config.data.frontend).n_mels,
                             -(-frames // WHOLE_CLIP_FRAMES) * WHOLE_CLIP_FRAMES)
  return config


def _lowest_fold(workdir) -> int:
  have = checkpoints.available_folds(workdir) if pathlib.Path(workdir).is_dir() else []
  if not have:
    raise errors.UserError(f'{workdir} holds no fold checkpoints '
                           '(expected fold_<i>/checkpoints/<step>/)')
  return have[0]


def _prediction(path, mel, seconds, probs, names) -> dict[str, Any]:
  best = int(np.argmax(probs))
  return {'file': str(path), 'emotion': names[best], 'probability': float(probs[best]),
          'probabilities': {name: float(p) for name, p in zip(names, probs)},
          'duration_s': round(float(seconds), 3), 'frames': int(mel.shape[1])}


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


# ----------------------------------------------------------------------------- tagging


def run_tagging(inputs: Sequence[str], *, weights=None, workdir=None, config=None,
                fold=None, step=None, labels_file=None, k: int = 5, pattern: str = '*.wav',
                skip_errors: bool = False) -> dict[str, Any]:
  """The top-`k` labels of every audio file, by sigmoid score, from a multi-label tagger.

  Each clip is seen whole (`whole_clip_config`). Made for AudioSet taggers (EfficientAT
  imported with launch/import_weights.py --labels=class_labels_indices.csv), whose labels
  file lies in the import directory; `labels_file` overrides it (`ser_jax.audioset` format).

  Returns:
    `{'model', 'checkpoint', 'frontend', 'labels_file', 'k', 'tags': [{'file',
    'duration_s', 'top': [{'index', 'label', 'score'}, ...]}], 'errors'}`.

  Raises:
    UserError: as `run_prediction`; no labels file, or one whose class count is not the
      model's (checked before the model is loaded).
  """
  from ser_jax import audioset  # pylint: disable=g-import-not-at-top
  if k < 1:
    raise errors.UserError(f'--top_k must be at least 1, got {k}')
  config, clips, problems = read_inputs(inputs, config=config, workdir=workdir,
                                        weights=weights, pattern=pattern,
                                        skip_errors=skip_errors)
  labels_file = labels_file or _labels_beside(weights)
  try:
    names = audioset.read_labels(labels_file)
  except (ValueError, OSError) as e:
    raise errors.UserError(f'--labels: {e}') from None
  if len(names) != config.model.num_classes:
    raise errors.UserError(
        f'{labels_file} lists {len(names)} labels but model {config.model.name!r} has '
        f'{config.model.num_classes} outputs: tagging needs the tagger the labels belong to '
        '(e.g. EfficientAT imported with --num_classes=527, no new head)')
  loaded = _load_for(config, workdir, fold, step, weights)  # checked against config
  logits = Predictor(whole_clip_config(config, clips), loaded.variables).logits(
      [mel for _, mel, _ in clips])
  tags = []
  for (path, _, seconds), row in zip(clips, audioset.top_k(logits, names, k=k)):
    tags.append({'file': str(path), 'duration_s': round(float(seconds), 3),
                 'top': [{'index': i, 'label': name, 'score': score}
                         for i, name, score in row]})
  return {'model': config.model.name, 'checkpoint': loaded.source,
          'frontend': config.data.frontend, 'labels_file': str(labels_file), 'k': k,
          'tags': tags, 'errors': problems}


def _labels_beside(weights) -> pathlib.Path:
  from ser_jax import audioset  # pylint: disable=g-import-not-at-top
  if weights is not None and os.path.isdir(weights):
    path = pathlib.Path(weights) / audioset.LABELS_FILE
    if path.is_file():
      return path
  raise errors.UserError(
      f'no {audioset.LABELS_FILE} in {weights or "the workdir"}: pass '
      '--labels=class_labels_indices.csv (or import the weights with --labels)')


def format_tags(doc: dict) -> str:
  """Per file: its name and length, then one 'score  label' line per tag."""
  lines = []
  for entry in doc['tags']:
    lines.append(f"{entry['file']} ({entry['duration_s']:.2f} s)")
    lines += [f"  {t['score']:.3f}  {t['label']}" for t in entry['top']]
  lines.append(f"({len(doc['tags'])} file{'s' if len(doc['tags']) != 1 else ''}; top "
               f"{doc['k']} of model {doc['model']} from {doc['checkpoint']})")
  lines += [f'skipped: {e}' for e in doc['errors']]
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- embeddings


def run_embedding(inputs: Sequence[str], output, *, weights=None, workdir=None,
                  config=None, fold=None, step=None, pattern: str = '*.wav',
                  skip_errors: bool = False) -> dict[str, Any]:
  """Writes each file's pooled embedding to the new `.npz` file `output`.

  Each clip is seen whole (`whole_clip_config`). The file holds `embeddings` (N, D)
  float32, `files` (N,) the input paths in the same order, and the identity of what
  computed them: `model`, `frontend`, `checkpoint` (0-d strings). It is written to a
  temporary sibling and linked into place, so an existing file is never overwritten and
  an interrupted run leaves none.

  Returns:
    `{'output', 'model', 'frontend', 'checkpoint', 'num_files', 'dim', 'errors'}`.

  Raises:
    UserError: as `run_prediction`; `output` exists or does not end in .npz (checked
      before any audio is read); the model has no embedding.
  """
  output = pathlib.Path(output)
  if output.suffix != '.npz':
    raise errors.UserError(f'--output={output}: expected a new .npz file')
  if output.exists():
    raise errors.UserError(f'--output={output} exists; refusing to overwrite it')
  if not output.parent.is_dir():
    raise errors.UserError(f'--output={output}: folder {output.parent} does not exist')
  config, clips, problems = read_inputs(inputs, config=config, workdir=workdir,
                                        weights=weights, pattern=pattern,
                                        skip_errors=skip_errors)
  check_embeds(config)
  loaded = _load_for(config, workdir, fold, step, weights)  # checked against config
  emb = Predictor(whole_clip_config(config, clips), loaded.variables).embeddings(
      [mel for _, mel, _ in clips])
  identity = {'model': config.model.name, 'frontend': config.data.frontend,
              'checkpoint': loaded.source}
  _write_new(output, lambda f: np.savez(
      f, embeddings=emb, files=np.array([str(p) for p, _, _ in clips]),
      **{k: np.array(v) for k, v in identity.items()}))
  return {'output': str(output), **identity, 'num_files': len(clips),
          'dim': int(emb.shape[1]), 'errors': problems}


def _write_new(path: pathlib.Path, write) -> None:
  """`write(file object)` into a temporary sibling, then hard-link it to `path` (atomic;
  fails instead of replacing a file that appeared meanwhile)."""
  tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  try:
    with open(tmp, 'xb') as f:
      write(f)
    try:
      os.link(tmp, path)
    except FileExistsError:
      raise errors.UserError(f'{path} appeared while computing; not overwriting it') from None
  finally:
    tmp.unlink(missing_ok=True)
