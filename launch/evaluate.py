r"""Evaluates a training checkpoint or imported weights on a fold or an explicit actor set.

A training run's checkpoints (its config is read from the workdir):

  python launch/evaluate.py --workdir=workdirs/cnnx               # every fold, latest step
  python launch/evaluate.py --workdir=workdirs/cnnx --fold=2 --step=1200
  python launch/evaluate.py --workdir=workdirs/cnnx --fold=0 --actors=4,9

Imported weights (a directory from launch/import_weights.py, or a .pth with its converter in
`--config.init.source`); the model and features come from `--config`:

  python launch/evaluate.py --config=configs/cnnx.py --weights=imported/predecessor_cnnx --fold=0
  python launch/evaluate.py --config=configs/cnnx.py --weights=cnnx.pth \
      --config.init.source=predecessor_cnnx --actors=all

Prints accuracy, macro precision/recall/F1 (the predecessor's table) and the per-class
report, and writes the report files of `ser_jax.reports.write_fold_report` into
`--output_dir` (default: `<workdir>/evaluate/fold_<i>_step_<n>[_actors_...]` for a workdir,
`./evaluate_<weights name>` for weights), plus a cross-validation summary when several
folds were evaluated. Evaluation covers every selected clip exactly once.

The library functions here (`load_config`, `restore_fold`, `load_weights`,
`predict_examples`, `run_evaluation`) are also used by launch/predict.py.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

log = logging.getLogger('evaluate')

# Runs from any working directory without installing the package: the repository root
# (this file's parent folder's parent) goes on sys.path.
_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))


class EvaluationError(ValueError):
  """A user-facing problem: missing checkpoint, model mismatch, bad selection."""


# ----------------------------------------------------------------------------- config


def load_config(config=None, workdir: str | os.PathLike | None = None):
  """The config to evaluate with: `config` if given, else `<workdir>/config.json`.

  Raises:
    EvaluationError: neither is available.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  if config is not None:
    return config
  if workdir is not None:
    path = pathlib.Path(workdir) / 'config.json'
    if path.exists():
      return ml_collections.ConfigDict(json.loads(path.read_text()))
    raise EvaluationError(f'{path} does not exist: {workdir} is not a training workdir '
                          '(pass --config=configs/<model>.py to say which model it is)')
  raise EvaluationError('pass --workdir (a training run) or --config with --weights')


def model_identity(config) -> dict[str, Any]:
  """What makes checkpoints interchangeable (as recorded by training in model.json)."""
  return {'name': config.model.name, 'num_classes': int(config.model.num_classes),
          'kwargs': dict(config.model.get('kwargs', {}) or {}),
          'input_shape': [int(s) for s in config.data.input_shape]}


# ----------------------------------------------------------------------------- weights


def checkpoint_dir(workdir: str | os.PathLike, fold: int) -> pathlib.Path:
  return pathlib.Path(workdir).absolute() / f'fold_{fold}' / 'checkpoints'


def available_folds(workdir: str | os.PathLike) -> list[int]:
  """Fold indices of `workdir` that hold at least one checkpoint step."""
  folds = []
  for d in pathlib.Path(workdir).glob('fold_*/checkpoints'):
    suffix = d.parent.name[len('fold_'):]
    if suffix.isdigit() and any(p.is_dir() and p.name.isdigit() for p in d.iterdir()):
      folds.append(int(suffix))
  return sorted(folds)


def restore_fold(workdir: str | os.PathLike, fold: int, step: int | None = None,
                 config=None) -> tuple[dict, dict, int]:
  """Restores `{'params', 'batch_stats'}` of a training checkpoint.

  Args:
    workdir: the training run's folder.
    fold: fold index (`<workdir>/fold_<fold>/checkpoints`).
    step: checkpoint step; None: the latest.
    config: when given, the checkpoint's recorded model must match it.

  Returns:
    (variables, meta, step): meta is the JSON saved with the checkpoint (epoch, history,
    model identity).

  Raises:
    EvaluationError: no such workdir/fold/step, or a checkpoint of another model.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = checkpoint_dir(workdir, fold)
  if not ckpt_dir.is_dir():
    have = available_folds(workdir) if pathlib.Path(workdir).is_dir() else []
    raise EvaluationError(f'no checkpoint for fold {fold}: {ckpt_dir} does not exist '
                          f'(folds with checkpoints in {workdir}: {have or "none"})')
  mngr = ocp.CheckpointManager(ckpt_dir, item_names=('state', 'meta'))
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise EvaluationError(f'{ckpt_dir} holds no finished checkpoint')
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise EvaluationError(f'{ckpt_dir} has no step {step}; it has steps {steps}')
    # No target tree: the raw arrays come back whatever optimiser state was saved, and only
    # the model's variables are kept.
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  finally:
    mngr.close()
  state, meta = restored['state'], dict(restored['meta'] or {})
  if config is not None and meta.get('model') and meta['model'] != model_identity(config):
    raise EvaluationError(
        f'{ckpt_dir} step {step} holds model {meta["model"]}, but the config asks for '
        f'{model_identity(config)}; evaluate it with the config it was trained with '
        '(leave out --config to use the workdir\'s config.json)')
  variables = {'params': state['params'], 'batch_stats': state.get('batch_stats') or {}}
  return _to_numpy(variables), meta, int(step)


def zero_variables(config) -> dict:
  """Zero-filled variables with the configured model's structure and shapes.

  Loading with no `dont_load` replaces every leaf, so only the tree matters: it comes from
  `jax.eval_shape` (a trace, no compile, no random init), which keeps evaluation start-up
  short even for CNN14 or VGG19.
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  model = train.build_model(config)
  mel, time_ = (int(s) for s in config.data.input_shape)
  x = jax.ShapeDtypeStruct((1, mel, time_, 1), np.float32)  # (batch, mel, time, channels)
  shapes = jax.eval_shape(lambda rng, x: model.init(rng, x, train=False),
                          jax.random.PRNGKey(0), x)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), flax.core.unfreeze(shapes))
  return dict(zeros)


def load_weights(config, weights: str | os.PathLike) -> dict:
  """Loads imported weights strictly into the configured model.

  Args:
    config: names the model, its classes, input shape and front end.
    weights: a directory written by launch/import_weights.py (Orbax `{'params',
      'batch_stats'}`) or a `.pth`/`.pt` file converted with `config.init.source`.

  Raises:
    EvaluationError: missing file, or weights of another model (every parameter must
      match in name and shape: nothing is left at its random initialisation).
  """
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(weights)
  if not path.exists():
    raise EvaluationError(f'weights {path} do not exist')
  if path.is_dir():
    info = pretrained.read_import_info(path)
    recorded = info.get('model') or info.get('model_name')
    if isinstance(recorded, str) and recorded != config.model.name:
      raise EvaluationError(f'{path} holds weights imported for model {recorded!r}, but the '
                            f'config asks for {config.model.name!r} (pass the matching '
                            '--config=configs/<model>.py)')
    if info.get('fresh'):
      # A new head or stem imported untrained: its predictions are not meaningful yet.
      log.warning('%s: %d variables were freshly initialised at import, not trained (%s); '
                  'fine-tune before trusting these metrics', path, len(info['fresh']),
                  ', '.join(info['fresh'][:6]) + (' ...' if len(info['fresh']) > 6 else ''))
  init = zero_variables(config)
  try:
    merged = pretrained.load_pretrained(path, init, source=config.init.get('source', ''),
                                        dont_load=(), frontend=config.data.name)
  except (pretrained.CheckpointError, ValueError, KeyError) as e:
    raise EvaluationError(f'cannot load {path} into model {config.model.name!r} '
                          f'({config.model.num_classes} classes, input '
                          f'{tuple(config.data.input_shape)}): {e}') from e
  return {'params': merged['params'], 'batch_stats': merged.get('batch_stats') or {}}


def _to_numpy(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, tree)


# ----------------------------------------------------------------------------- inference


def predict_examples(config, variables: dict, examples) -> dict[str, Any]:
  """Runs training's evaluation (`ser_jax.train.evaluate`) over every clip of `examples`.

  The clips go through the same `input_pipeline` transform as training's held-out set
  (resize or crop/pad from `config.data`), in padded batches of `config.eval_batch_size`
  on all local devices (`config.parallel`).

  Returns:
    `{'labels', 'predictions', 'probabilities', 'loss', 'accuracy', 'num_examples'}`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  if len(examples) == 0:
    raise EvaluationError('nothing to evaluate: the selection holds no clips')
  examples = input_pipeline.prepare_images(examples, config.data)
  # One Runner (and so one compiled eval step) per model and batch layout: evaluating
  # several folds, or several actor sets, compiles once.
  key = (json.dumps(model_identity(config), sort_keys=True), str(config.model.dtype),
         config.data.crop_mode, config.parallel, int(config.eval_batch_size),
         int(config.batch_size), train.get_model)
  if key not in _RUNNERS:
    model = train.build_model(config)
    _RUNNERS.clear()  # keep only the latest: compiled steps hold device memory
    _RUNNERS[key] = (model, train.Runner(config, model, jax.random.PRNGKey(0)))
  model, runner = _RUNNERS[key]
  state = train.TrainState.create(apply_fn=model.apply, params=variables['params'],
                                  tx=optax.identity(),
                                  batch_stats=variables.get('batch_stats') or {})
  return train.evaluate(runner, runner.place_state(state), examples, config)


_RUNNERS: dict[Any, Any] = {}


def _select(config, examples, actors: Sequence[int], dataset_name: str):
  from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from ser_jax import splits  # pylint: disable=g-import-not-at-top
  bad = [a for a in actors if not 1 <= a <= splits.NUM_ACTORS]
  if bad:
    raise EvaluationError(f'actors {bad} are outside 1..{splits.NUM_ACTORS}')
  try:
    return input_pipeline.select_actors(examples, actors, dataset_name=dataset_name)
  except ValueError as e:
    raise EvaluationError(str(e)) from e


def fold_test_actors(config, fold: int) -> tuple[int, ...]:
  """Held-out actors of fold `fold` of the config's scheme (all folds, not `which`)."""
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.folds.which = ()
  folds = train.get_folds(cfg)
  if not 0 <= fold < len(folds):
    raise EvaluationError(f'fold {fold} does not exist: the scheme {cfg.folds.scheme!r} '
                          f'has folds 0..{len(folds) - 1}')
  return tuple(folds[fold][1].test)


def parse_actors(value: Sequence[str] | str | None) -> tuple[int, ...] | str | None:
  """'4,9' or ['4', '9'] -> (4, 9); 'all' -> 'all'; None/empty -> None."""
  if value is None:
    return None
  items = value.split(',') if isinstance(value, str) else list(value)
  items = [str(v).strip() for v in items if str(v).strip()]
  if not items:
    return None
  if items == ['all']:
    return 'all'
  try:
    return tuple(sorted({int(v) for v in items}))
  except ValueError:
    raise EvaluationError(f"--actors must be comma-separated actor ids (1..24) or 'all', "
                          f'got {",".join(items)}') from None


def run_evaluation(config=None, *, workdir=None, folds: Sequence[int] | None = None,
                   step: int | None = None, weights=None, actors=None, output_dir=None,
                   examples=None, write: bool = True) -> list[dict[str, Any]]:
  """Evaluates and writes reports; returns one metrics dict per evaluated fold.

  Args:
    config: the model/data config; None: `<workdir>/config.json`.
    workdir: a training run (with `weights` None): evaluate its fold checkpoints.
    folds: fold indices; None: every fold with a checkpoint (workdir), or required with
      weights unless `actors` is given.
    step: checkpoint step (workdir only); None: the latest.
    weights: imported weights (directory or .pth) instead of a workdir.
    actors: explicit held-out actors (tuple of ints) or 'all', instead of the fold's.
    output_dir: where reports go (see module docstring for the default).
    examples: preloaded clips (`input_pipeline.Examples`); None: the TFDS dataset.
    write: write report files (process 0 only).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from ser_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from ser_jax import reports  # pylint: disable=g-import-not-at-top
  if weights is None and workdir is None:
    raise EvaluationError('pass --workdir (a training run) or --weights (imported weights)')
  if weights is not None and workdir is not None:
    raise EvaluationError('pass either --workdir or --weights, not both')
  config = load_config(config, workdir)
  actors = parse_actors(actors) if isinstance(actors, (str, list)) else actors
  if weights is None:
    have = available_folds(workdir) if pathlib.Path(workdir).is_dir() else []
    if folds is None:
      if not have:
        raise EvaluationError(f'{workdir} holds no fold checkpoints '
                              '(expected fold_<i>/checkpoints/<step>/)')
      folds = have
  elif folds is None and actors is None:
    raise EvaluationError("with --weights, choose the data: --fold=<i> (that fold's "
                          "held-out actors) or --actors=4,9,... or --actors=all")
  folds = list(folds) if folds is not None else [None]
  if actors is not None and len(folds) > 1:
    raise EvaluationError(f'--actors applies to one checkpoint; pass --fold (folds '
                          f'available: {folds})')

  # Cheap checks first (model name, weights, checkpoints, folds), then the data, which may
  # have to be built.
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  train.build_model(config)  # an unknown model name fails here
  names = class_names(config)
  weight_vars = load_weights(config, weights) if weights is not None else None
  for fold in folds:
    if weight_vars is None and not checkpoint_dir(workdir, fold).is_dir():
      raise EvaluationError(f'no checkpoint for fold {fold}: {checkpoint_dir(workdir, fold)} '
                            f'does not exist (folds with checkpoints in {workdir}: '
                            f'{available_folds(workdir) or "none"})')
    if actors is None:
      fold_test_actors(config, fold)

  dataset_name = config.data.name
  if examples is None:
    examples = input_pipeline.load_all(config.data)
  else:
    dataset_name += ' (preloaded)'
  examples = input_pipeline.prepare_images(examples, config.data)

  results = []
  for fold in folds:
    if weight_vars is None:
      variables, meta, used_step = restore_fold(workdir, fold, step, config)
      source = f'{checkpoint_dir(workdir, fold)}/{used_step}'
    else:
      variables, meta, used_step = weight_vars, {}, None
      source = str(weights)
    if actors == 'all':
      test = tuple(sorted({int(a) for a in examples.actors}))
    elif actors is not None:
      test = tuple(actors)
    else:
      test = fold_test_actors(config, fold)
    selection = _select(config, examples, test, dataset_name)
    out = predict_examples(config, variables, selection)
    m = metrics_lib.classification_metrics(out['labels'], out['predictions'],
                                           int(config.model.num_classes))
    title = (f'{reports.display_name(config.model.name)}'
             + (f' fold {fold}' if fold is not None else '')
             + (f' step {used_step}' if used_step is not None else ''))
    m.update({'fold': fold, 'test_actors': list(test), 'eval_loss': out['loss'],
              'checkpoint': source, 'title': title})
    results.append(m)
    if write and jax.process_index() == 0:
      fold_out = _fold_output_dir(output_dir, workdir, weights, fold, used_step, actors)
      reports.write_fold_report(fold_out, m, meta.get('history') or [], names)
      m['report_dir'] = str(fold_out)
  if write and len(results) > 1 and jax.process_index() == 0:
    root = pathlib.Path(output_dir) if output_dir else pathlib.Path(workdir) / 'evaluate'
    reports.write_cv_report(root, results, metrics_lib.summarize_folds(results), config,
                            names)
  return results


def class_names(config) -> list[str]:
  """RAVDESS emotion names for an 8-class model (training's order), else class_<i>."""
  from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from ser_jax import reports  # pylint: disable=g-import-not-at-top
  n = int(config.model.num_classes)
  return reports.class_names_for(
      n, input_pipeline.CLASS_NAMES if n == len(input_pipeline.CLASS_NAMES) else None)


def _fold_output_dir(output_dir, workdir, weights, fold, step, actors) -> pathlib.Path:
  parts = []
  if fold is not None:
    parts.append(f'fold_{fold}')
  if step is not None:
    parts.append(f'step_{step}')
  if actors == 'all':
    parts.append('actors_all')
  elif actors is not None:
    parts.append('actors_' + '-'.join(str(a) for a in actors))
  name = '_'.join(parts) or 'evaluation'
  if output_dir:
    root = pathlib.Path(output_dir)
  elif workdir is not None:
    root = pathlib.Path(workdir) / 'evaluate'
  else:
    root = pathlib.Path(f'evaluate_{pathlib.Path(weights).name}')
  return root / name


def format_results(results: Sequence[dict], config) -> str:
  """The predecessor's table (one row per evaluated fold) and each per-class report."""
  from ser_jax import reports  # pylint: disable=g-import-not-at-top
  names = class_names(config)
  rows = [(m['title'], m) for m in results]
  parts = [reports.results_table(rows), '']
  for m in results:
    parts += [f"## {m['title']}: actors {', '.join(str(a) for a in m['test_actors'])}, "
              f"{m['num_examples']} clips, loss {m['eval_loss']:.4f}", '',
              reports.per_class_markdown(m, names), '']
    if m.get('report_dir'):
      parts += [f"Report written to {m['report_dir']}", '']
  return '\n'.join(parts)


# ----------------------------------------------------------------------------- CLI


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f'evaluate.py: unexpected arguments {argv[1:]}')
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if not f['verbosity'].present:
    # Orbax and JAX log at INFO on every restore; keep stderr for what matters.
    absl_logging.set_verbosity(absl_logging.WARNING)
  config = _CONFIG.value
  if config is not None and f.data_dir:
    config.data.data_dir = f.data_dir
  try:
    if config is None and f.workdir:
      config = load_config(None, f.workdir)
      if f.data_dir:
        config.data.data_dir = f.data_dir
    if config is not None and f.batch_size:
      config.eval_batch_size = f.batch_size
    results = run_evaluation(
        config, workdir=f.workdir or None, folds=None if f.fold is None else [f.fold],
        step=f.step, weights=f.weights or None, actors=parse_actors(f.actors),
        output_dir=f.output_dir or None)
  # User-facing failures (missing data or checkpoint, unknown model, mismatched weights)
  # as one line, not a traceback.
  except (EvaluationError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f'evaluate.py: error: {e}') from None
  if f.format == 'json':
    print(json.dumps(results, indent=2, default=str))
  else:
    print(format_results(results, config))


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  global _CONFIG
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/<model>.py[:tiny]); default: the '
      "workdir's config.json. Fields can be overridden, e.g. --config.eval_batch_size=16.",
      lock_config=False)
  flags.DEFINE_string('workdir', '', 'Training run to evaluate (its fold_<i>/checkpoints).')
  flags.DEFINE_integer('fold', None, 'Fold index; default: every fold with a checkpoint. '
                       "With --weights: evaluate on that fold's held-out actors.")
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
  flags.DEFINE_string('weights', '', 'Imported weights: a launch/import_weights.py '
                      'directory, or a .pth converted with --config.init.source.')
  flags.DEFINE_list('actors', None, "Evaluate on these actors (e.g. 4,9) or 'all' instead "
                    "of the fold's held-out actors.")
  flags.DEFINE_string('output_dir', '', 'Where to write the reports (see module doc).')
  flags.DEFINE_string('data_dir', '', 'TFDS data_dir (overrides config.data.data_dir).')
  flags.DEFINE_integer('batch_size', None, 'Evaluation batch size (config.eval_batch_size).')
  flags.DEFINE_enum('format', 'table', ['table', 'json'], 'Output format on stdout.')


_CONFIG = None

if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
