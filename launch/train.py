r"""Trains and cross-validates an experiment: a thin launcher over `ser_jax.train`.

  python launch/train.py --config=configs/cnnx.py --workdir=workdirs/cnnx
  python launch/train.py --config=configs/cnnx.py:tiny --workdir=/tmp/cnnx_tiny
  python launch/train.py --config=configs/cnnx.py --workdir=workdirs/cnnx3 --seeds=41,42,43
  python launch/train.py --config=configs/cnn14.py --workdir=workdirs/cnn14 \
      --config.num_epochs=10 --config.folds.which=0,1 --config.parallel=jit

Any config field can be overridden with `--config.<field>=<value>`. Rerunning the same
command with the same `--workdir` resumes from the latest checkpoint of each fold.
Multi-host runs also take `--coordinator_address`, `--num_processes`, `--process_id`
(see ser_jax/distributed.py; Cloud TPU VMs need none of them).
"""

import logging as std_logging
import pathlib

from absl import app
from absl import flags
from absl import logging

from ser_jax import config_lib
from ser_jax import distributed
from ser_jax import errors

_CONFIG = config_lib.define_config_flag(
    'Experiment config file (configs/<name>.py, optionally :tiny).',
    default=str(pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'default.py'))
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder: checkpoints, reports, '
                               'TensorBoard events. Rerun with the same one to resume.')
_SEEDS = flags.DEFINE_list('seeds', [], 'Run the experiment once per seed (overriding '
                           'config.seed) into WORKDIR/seed_<s>/ and aggregate them into '
                           'WORKDIR/results.md, e.g. --seeds=41,42,43.')
flags.mark_flags_as_required(['workdir'])


class _QuietOrbax(std_logging.Filter):
  """Drops Orbax's per-save INFO lines so the console shows progress and results."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  logging.get_absl_handler().addFilter(_QuietOrbax())
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with errors.exit_on_user_error('train.py'):
    distributed.maybe_initialize()  # before anything touches a JAX backend
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import seeds  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top

  # ser_jax logs through the standard library; absl's handler prints it.
  std_logging.getLogger('ser_jax').setLevel(std_logging.INFO)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  logging.info('Config:\n%s', _CONFIG.value)
  # Configuration, data and divergence problems: one clear line; anything else is a bug
  # and keeps its traceback.
  with errors.exit_on_user_error('train.py'):
    if _SEEDS.value:
      summary = seeds.train_over_seeds(_CONFIG.value, _WORKDIR.value, _SEEDS.value)
    else:
      summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    mean, std = summary['mean'], summary['std']  # std over seeds with --seeds, else folds
    print(f"{_CONFIG.value.model.name}: " + ', '.join(
        f'{k} {100 * mean[k]:.2f}% (+- {100 * std[k]:.2f})'
        for k in ('accuracy', 'precision', 'recall', 'f1')))
    print(f'Reports: {pathlib.Path(_WORKDIR.value) / "results.md"}')


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
