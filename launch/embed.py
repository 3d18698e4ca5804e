r"""Writes pooled audio embeddings: a thin launcher over `ser_jax.inference.run_embedding`.

  python launch/embed.py --weights=imported/mn04_as --output=emb.npz recordings/
  python launch/embed.py --workdir=workdirs/efficientat_mn04 --fold=0 --output=ft.npz clip.wav

One new `.npz` (never overwritten): `embeddings` (N, D) float32 (384-d for efficientat_mn04:
what the classifier head reads), `files` (N,) the input paths in the same order, and
`model`, `frontend`, `checkpoint` naming what computed them:

  with np.load('emb.npz') as z:
    X, files = z['embeddings'], z['files']

Works with imported weights (launch/import_weights.py) and with a fine-tuned training run
(--workdir, checkpoint of --fold). Each clip is seen whole (padded to the longest clip, the
padding left out of the pooling). Inputs, --pattern and --skip_errors work as in
launch/predict.py. Only models with a pooled embedding (the efficientat_mn* family) are
accepted.
"""

from absl import app
from absl import flags

from ser_jax import config_lib
from ser_jax import errors

_CONFIG = config_lib.define_config_flag(
    "Experiment config file; default: the workdir's config.json or what the --weights "
    'directory records.', lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', '', 'Training run whose fold checkpoint embeds.')
_FOLD = flags.DEFINE_integer('fold', None, 'Fold checkpoint to use; default: the lowest one.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
_WEIGHTS = flags.DEFINE_string('weights', '', 'Imported weights (launch/import_weights.py '
                               'directory) instead of --workdir.')
_OUTPUT = flags.DEFINE_string('output', None, 'The new .npz file to write.')
_PATTERN = flags.DEFINE_string('pattern', '*.wav', 'File pattern searched in folders (any case).')
_SKIP_ERRORS = flags.DEFINE_boolean('skip_errors', False, 'Embed the readable files and list '
                                    'the missing/undecodable ones instead of stopping.')
flags.mark_flags_as_required(['output'])


def main(argv):
  config_lib.quiet_logging_unless_asked()
  from ser_jax import inference  # pylint: disable=g-import-not-at-top
  with errors.exit_on_user_error('embed.py'):
    doc = inference.run_embedding(
        argv[1:], _OUTPUT.value, weights=_WEIGHTS.value or None,
        workdir=_WORKDIR.value or None, config=_CONFIG.value, fold=_FOLD.value,
        step=_STEP.value, pattern=_PATTERN.value, skip_errors=_SKIP_ERRORS.value)
  print(f"Wrote {doc['output']}: {doc['num_files']} embeddings of {doc['dim']} values "
        f"({doc['model']}, front end {doc['frontend']}, from {doc['checkpoint']})")
  for e in doc['errors']:
    print(f'skipped: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
