r"""CNN14 and CNN14 + Attn from scratch in bfloat16 through the predecessor's full protocol.

The GPU rows of the README's results table: for each model, `launch/train.py`'s own
`train.train_and_evaluate` with `configs/<model>.py` unchanged except the compute dtype
(`model.dtype='bfloat16'`: parameters, BatchNorm statistics and Adam state stay float32) --
its 4 folds, 120 epochs, final epoch on the 6 held-out actors of each fold. Prints one
results-table row per model (mean over the folds, +- sample std over folds) and the training
throughput: training clips seen / seconds spent in training epochs (evaluation excluded),
from the per-epoch `epoch_seconds` of the fold reports.

  # on a GPU machine with the prepared dataset (minutes per fold on an H100-class GPU)
  python bench/cnn14_protocol.py --data_dir=/path/to/tensorflow_datasets \
      --workdir=/tmp/cnn14_protocol
  # CPU check of the script itself: :tiny configs (64 x 64), narrow CNN14s, 2 epochs, fold 0
  python bench/cnn14_protocol.py --data_dir=... --workdir=/tmp/cnn14_check --tiny

Rerunning with the same --workdir resumes (each model trains in WORKDIR/<model>/). Epoch 1's
time includes compilation; `--skip_first_epoch` (default on) leaves it out of examples/s.
"""
import json
import pathlib
import runpy
import time

from absl import app
from absl import flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]

_MODELS = flags.DEFINE_list('models', ['cnn14', 'cnn14_attn'], 'Configs in configs/.')
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                'TFDS data_dir holding ravdess/speech_predecessor48k.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (one subfolder per model).')
_DTYPE = flags.DEFINE_string('dtype', 'bfloat16', 'Compute dtype.')
_TINY = flags.DEFINE_bool('tiny', False, 'CPU check: :tiny configs, narrow widths, 2 epochs, '
                          'fold 0.')
_SKIP_FIRST = flags.DEFINE_bool('skip_first_epoch', True,
                                'Leave epoch 1 (compilation) out of examples/s.')
flags.mark_flags_as_required(['data_dir', 'workdir'])


def experiment_config(name: str, dtype: str, tiny: bool):
  """configs/<name>.py with the compute dtype set (and the :tiny check settings)."""
  config = runpy.run_path(str(_ROOT / 'configs' / f'{name}.py'))['get_config'](
      'tiny' if tiny else None)
  config.model.dtype = dtype
  # A check that the script runs, not a measurement. 64 x 64 leaves CNN14 a 1 x 1 map, where
  # attention over one position is the global average: both tiny rows come out identical.
  if tiny:
    config.num_epochs = 2
    config.folds.which = (0,)
    config.model.kwargs.widths = (8, 16, 32, 64, 128, 256)
  return config


def throughput(workdir: pathlib.Path, skip_first: bool) -> float:
  """Training clips per second over every fold's epochs (from fold_<i>/report.json)."""
  clips, seconds = 0, 0.0
  for report_path in sorted(workdir.glob('fold_*/report.json')):
    report = json.loads(report_path.read_text())
    history = report['history'][1:] if skip_first and len(report['history']) > 1 else (
        report['history'])
    clips += report['num_train_examples'] * len(history)
    seconds += sum(h['epoch_seconds'] for h in history)
  return clips / seconds if seconds else float('nan')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import reports  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top

  rows, lines = [], []
  for name in _MODELS.value:
    config = experiment_config(name, _DTYPE.value, _TINY.value)
    config.data.data_dir = _DATA_DIR.value
    config.data.download = False
    workdir = pathlib.Path(_WORKDIR.value) / name
    t0 = time.time()
    summary = train.train_and_evaluate(config, workdir)
    wall = time.time() - t0
    mean, std = summary['mean'], summary['std']
    row = f'{reports.display_name(name)} (ser-jax, {_DTYPE.value})'
    rows.append((row, mean))
    lines.append(
        f'{row}: accuracy {reports.percent(mean["accuracy"])} +- {100 * std["accuracy"]:.2f} '
        f'over {summary["num_folds"]} folds; folds ' + ' / '.join(
            f'{100 * a:.1f}' for a in summary['per_fold']['accuracy'])
        + f'; {throughput(workdir, _SKIP_FIRST.value):.0f} training examples/s; '
        f'wall {wall / 60:.1f} min')
  print(f'device: {jax.devices()[0].device_kind} x {jax.device_count()}')
  print(reports.results_table(rows))
  for line in lines:
    print(line)


if __name__ == '__main__':
  app.run(main)
