r"""Evaluates a training checkpoint or imported weights: a thin launcher over `ser_jax.evaluation`.

A training run's checkpoints (its config is read from the workdir):

  python launch/evaluate.py --workdir=workdirs/cnnx               # every fold, latest step
  python launch/evaluate.py --workdir=workdirs/cnnx --fold=2 --step=1200
  python launch/evaluate.py --workdir=workdirs/cnnx --fold=0 --actors=4,9
  # Actors fold 0 trained on: refused unless asked for, and then marked in every report
  python launch/evaluate.py --workdir=workdirs/cnnx --fold=0 --actors=1 --allow_training_speakers

An ensemble: several runs of one model (e.g. the seeds of a `--seeds` run), their fold
checkpoints' softmax probabilities averaged clip by clip; the reports give each run's own
accuracy beside the ensemble's (default output: `<parent>/evaluate_ensemble_<runs>/`):

  python launch/evaluate.py --workdir=workdirs/effat/seed_0,workdirs/effat/seed_1,workdirs/effat/seed_2

The same runs as one model, their variables averaged (a uniform model soup; for runs
fine-tuned from one pretrained start; default output `<parent>/evaluate_soup_<runs>/`):

  python launch/evaluate.py --combine=weights \
      --workdir=workdirs/effat/seed_0,workdirs/effat/seed_1,workdirs/effat/seed_2

Imported weights (a directory from launch/import_weights.py, or a .pth with its converter in
`--config.init.source`); the model and features come from `--config`:

  python launch/evaluate.py --config=configs/cnnx.py --weights=imported/predecessor_cnnx --fold=0
  python launch/evaluate.py --config=configs/cnnx.py --weights=cnnx.pth \
      --config.init.source=predecessor_cnnx --actors=all

Cross-corpus: the same model on another dataset (built with the model's front end), on the
emotions both share, on speakers it never trained on (`ser_jax.cross_corpus`):

  python launch/evaluate.py --workdir=workdirs/cnnx --data=ser_tess     # or ser_savee, ...
  python launch/evaluate.py --workdir=workdirs/cnnx --data=ravdess/song  # each fold's test actors

Prints accuracy, macro precision/recall/F1 (the predecessor's table) and the per-class
report, and writes the fold reports into `--output_dir` (default:
`<workdir>/evaluate/fold_<i>_step_<n>[_actors_...]` for a workdir, `./evaluate_<weights
name>` for weights; `<that>/<data>/...` with --data), plus a cross-validation summary when
several folds were evaluated.
"""

import json

from absl import app
from absl import flags

from ser_jax import config_lib
from ser_jax import errors

_CONFIG = config_lib.define_config_flag(
    'Experiment config file (configs/<model>.py[:tiny]); default: the '
    "workdir's config.json. Fields can be overridden, e.g. --config.eval_batch_size=16.",
    lock_config=False)
_WORKDIR = flags.DEFINE_list('workdir', [], 'Training run to evaluate (its '
                             'fold_<i>/checkpoints); several, comma-separated: their ensemble.')
_FOLD = flags.DEFINE_integer('fold', None, 'Fold index; default: every fold with a checkpoint. '
                             "With --weights: evaluate on that fold's held-out actors.")
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
_WEIGHTS = flags.DEFINE_string('weights', '', 'Imported weights: a launch/import_weights.py '
                               'directory, or a .pth converted with --config.init.source.')
_ACTORS = flags.DEFINE_list('actors', None, "Evaluate on these actors (e.g. 4,9) or 'all' "
                            "instead of the fold's held-out actors.")
_ALLOW_TRAINING_SPEAKERS = flags.DEFINE_boolean(
    'allow_training_speakers', False, 'Evaluate a checkpoint on actors it was trained on '
    '(refused otherwise: those metrics are not speaker-independent); every report of the '
    'run is then marked "includes training speakers".')
_DATA = flags.DEFINE_string('data', '', 'Evaluate on this dataset (ser_tess, ser_savee, '
                            'ser_emodb, ser_crema_d, ravdess/song, ...) instead of the '
                            "model's config.data.name: cross-corpus evaluation.")
_COMBINE = flags.DEFINE_enum('combine', 'probabilities', ['probabilities', 'weights'],
                             'Several --workdir runs: average their softmax probabilities '
                             '(an ensemble) or their variables (one model).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', '', 'Where to write the reports (see above).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data_dir (overrides config.data.data_dir).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Evaluation batch size '
                                   '(config.eval_batch_size).')
_FORMAT = flags.DEFINE_enum('format', 'table', ['table', 'json'], 'Output format on stdout.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config_lib.quiet_logging_unless_asked()
  from ser_jax import evaluation  # pylint: disable=g-import-not-at-top
  from ser_jax import inference  # pylint: disable=g-import-not-at-top
  with errors.exit_on_user_error('evaluate.py'):
    workdirs = _WORKDIR.value
    config = inference.resolve_config(_CONFIG.value, workdirs[0] if workdirs else None)
    if _DATA_DIR.value:
      config.data.data_dir = _DATA_DIR.value
    if _BATCH_SIZE.value:
      config.eval_batch_size = _BATCH_SIZE.value
    results = evaluation.run_evaluation(
        config, workdir=workdirs or None,
        folds=None if _FOLD.value is None else [_FOLD.value], step=_STEP.value,
        weights=_WEIGHTS.value or None, actors=_ACTORS.value, data=_DATA.value or None,
        output_dir=_OUTPUT_DIR.value or None,
        allow_training_speakers=_ALLOW_TRAINING_SPEAKERS.value, combine=_COMBINE.value)
  if _FORMAT.value == 'json':
    print(json.dumps(results, indent=2, default=str))
  else:
    print(evaluation.format_results(results, config))


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
