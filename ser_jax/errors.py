"""`UserError`: a problem the user can fix (a setting, a file, the data), not a bug.

Every error raised for bad input derives from `UserError`: configuration settings
(`config_lib.validate`), data (`tfds_corpora.sources.CorpusInputError`, which
`tfds_ravdess.sources.RavdessInputError` is, `features.AudioDecodeError`), checkpoints and
weights (`pretrained.CheckpointError`, `checkpoints`), a diverging run or damaged data
(`train.NonFiniteLossError`, `train.NonFiniteInputError`). Its message names the file or
setting and what was expected. Launchers catch only `UserError` and print its message as
one line (`exit_on_user_error`); any other exception is a bug and keeps its traceback.

`UserError` derives from `ValueError` because most of these were `ValueError`s before
it existed, so code that catches `ValueError` keeps working.
"""

import contextlib
import sys


class UserError(ValueError):
  """Bad input: the message says which file or setting, and what was expected."""


@contextlib.contextmanager
def exit_on_user_error(program: str):
  """Turns a `UserError` into `sys.exit('<program>: error: <message>')`; nothing else."""
  try:
    yield
  except UserError as e:
    sys.exit(f'{program}: error: {e}')


class CheckpointError(UserError):
  """A checkpoint or weights file that cannot be read, or does not fit its model."""
