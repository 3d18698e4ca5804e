r"""Predicts the emotion of audio files: a thin launcher over `ser_jax.inference`.

  python launch/predict.py --workdir=workdirs/cnnx clip.wav other.wav
  python launch/predict.py --workdir=workdirs/cnnx --fold=2 recordings/      # a folder
  python launch/predict.py --workdir=workdirs/cnnx 'data/**/*.wav' --format=json
  python launch/predict.py --config=configs/cnnx.py --weights=imported/predecessor_cnnx clip.wav

Inputs: files, folders (searched recursively for `--pattern`, default `*.wav`, any case)
and glob patterns (quote them; `**` recurses). Audio of any sample rate, channel count and
length is decoded, downmixed and resampled to the model's front end
(`config.data.frontend`), turned into features exactly as the dataset builder does
(`ser_jax.features.clip_to_features`), then goes through the same input transform as
training's evaluation (bilinear resize to `config.data.input_shape`, or centre crop / pad
with a mask).

Output (stdout): a table with each file's predicted emotion, its probability and every
class's probability (default), or `--format=json`. Logs go to stderr.

A missing or undecodable file stops the run before the model is loaded, naming every such
file (`--skip_errors` predicts the others and lists the failures instead). With a workdir,
the checkpoint of `--fold` is used (default: the lowest fold that has one; each fold's model
was trained without that fold's held-out actors).
"""

import json

from absl import app
from absl import flags

from ser_jax import config_lib
from ser_jax import errors

_CONFIG = config_lib.define_config_flag(
    "Experiment config file; default: the workdir's config.json.",
    lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', '', 'Training run whose fold checkpoint predicts.')
_FOLD = flags.DEFINE_integer('fold', None, 'Fold checkpoint to use; default: the lowest one.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
_WEIGHTS = flags.DEFINE_string('weights', '', 'Imported weights instead of --workdir: a '
                               'launch/import_weights.py directory (its recorded model unless '
                               '--config), or a weights file with --config.init.source.')
_FORMAT = flags.DEFINE_enum('format', 'table', ['table', 'json'], 'Output format on stdout.')
_PATTERN = flags.DEFINE_string('pattern', '*.wav', 'File pattern searched in folders (any case).')
_SKIP_ERRORS = flags.DEFINE_boolean('skip_errors', False, 'Predict the readable files and list '
                                    'the missing/undecodable ones instead of stopping.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Inference batch size '
                                   '(config.eval_batch_size).')


def main(argv):
  config_lib.quiet_logging_unless_asked()
  from ser_jax import inference  # pylint: disable=g-import-not-at-top
  with errors.exit_on_user_error('predict.py'):
    config = _CONFIG.value
    if _BATCH_SIZE.value:
      config = inference.resolve_config(config, _WORKDIR.value or None, _WEIGHTS.value or None)
      config.eval_batch_size = _BATCH_SIZE.value
    doc = inference.run_prediction(
        argv[1:], config=config, workdir=_WORKDIR.value or None, fold=_FOLD.value,
        step=_STEP.value, weights=_WEIGHTS.value or None, pattern=_PATTERN.value,
        skip_errors=_SKIP_ERRORS.value)
  print(json.dumps(doc, indent=2) if _FORMAT.value == 'json' else inference.format_table(doc))


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
