"""The workdir layout and every Orbax call: save, restore, the record of what was trained.

Workdir layout (training writes it; evaluation and prediction read it):

  workdir/config.json                    the run's whole config (`config_lib.from_dict` reads it)
  workdir/model.json                     the model identity (`model_identity`)
  workdir/train.lock                     '<pid> <host>' of the training run holding it
                                         (`training_lock`; empty when none does)
  workdir/fold_<i>/checkpoints/<step>/   Orbax CheckpointManager steps, items 'state' (the
                                         TrainState) and 'meta' (JSON: epoch, history,
                                         fold, model identity, config)

The model identity is what makes two checkpoints interchangeable: model name, classes,
constructor kwargs, input shape and front end. Each checkpoint's meta also carries the
whole config it was trained with (`run_record`) and the actors it trained on, so
`check_workdir` refuses a resume with any setting that could change the trained model
(`config_lib.resume_differences`), and evaluation knows which actors are not held out.

`FoldCheckpoints` is one fold's manager for training (latest step agreed by all hosts,
save, restore into a target); `restore_fold` is the one restore of a training
checkpoint, used for resuming (with a target tree) and by evaluation and prediction
(without one: raw arrays, whatever optimiser state was saved). `save_variables` /
`restore_variables` hold the variables of a `launch/import_weights.py` directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket
import threading
from typing import Any

import numpy as np

from ser_jax import errors

log = logging.getLogger(__name__)

CONFIG_JSON = 'config.json'
MODEL_JSON = 'model.json'
LOCK_FILE = 'train.lock'
ITEMS = ('state', 'meta')


# ----------------------------------------------------------------------------- layout


def fold_dir(workdir: str | os.PathLike, fold: int) -> pathlib.Path:
  return pathlib.Path(workdir) / f'fold_{fold}'


def checkpoint_dir(workdir: str | os.PathLike, fold: int) -> pathlib.Path:
  return fold_dir(workdir, fold).absolute() / 'checkpoints'


def _has_steps(ckpt_dir: pathlib.Path) -> bool:
  return ckpt_dir.is_dir() and any(p.is_dir() and p.name.isdigit() for p in ckpt_dir.iterdir())


def available_folds(workdir: str | os.PathLike) -> list[int]:
  """Fold indices of `workdir` that hold at least one checkpoint step."""
  folds = []
  for d in pathlib.Path(workdir).glob('fold_*/checkpoints'):
    suffix = d.parent.name[len('fold_'):]
    if suffix.isdigit() and _has_steps(d):
      folds.append(int(suffix))
  return sorted(folds)


# ----------------------------------------------------------------------------- run record


def model_identity(config) -> dict[str, Any]:
  """What makes checkpoints interchangeable: model, classes, kwargs, input, front end."""
  return {'name': config.model.name, 'num_classes': int(config.model.num_classes),
          'kwargs': dict(config.model.get('kwargs', {}) or {}),
          'input_shape': [int(s) for s in config.data.input_shape],
          'frontend': config.data.frontend}


def run_record(config) -> dict[str, Any]:
  """What a checkpoint's meta records about the run: model identity and whole config."""
  return {'model': model_identity(config), 'config': config.to_dict()}


def same_model(recorded: dict[str, Any], config) -> bool:
  """Whether a recorded identity is `config`'s (records from before the front end was
  part of the identity are compared on the fields they have)."""
  ident = model_identity(config)
  return all(recorded.get(k) == v for k, v in ident.items()
             if k in recorded or k != 'frontend')


def check_workdir(config, workdir: str | os.PathLike) -> None:
  """Refuses a workdir whose checkpoints were trained with other settings or another model.

  Each fold's latest checkpoint records the config it was trained with; a config that
  differs from it in anything that can change the trained model
  (`config_lib.resume_differences`) is refused with one line naming every differing
  field, before the workdir's files are rewritten. Checkpoints without that record
  (older runs) are compared on the model identity in `model.json`.

  Raises:
    UserError: other training settings, another model identity, or checkpoints without
      a `model.json`.
  """
  from ser_jax import config_lib  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  folds = available_folds(workdir)
  for fold in folds:
    step, meta = _latest_meta(workdir, fold)
    if 'config' not in meta:
      continue
    diffs = config_lib.resume_differences(meta['config'], config,
                                          trained_epochs=int(meta.get('epoch', 0)))
    if diffs:
      raise errors.UserError(
          f'{checkpoint_dir(workdir, fold)} step {step} was trained with other settings: '
          f'{"; ".join(diffs)}. {config_lib.RESUME_HINT}. To train with these settings, '
          'use a new --workdir.')
  path = workdir / MODEL_JSON
  if path.exists():
    recorded = json.loads(path.read_text())
    if folds and not same_model(recorded, config):
      raise errors.UserError(
          f'{workdir} holds checkpoints of a different model: {path} records {recorded}, '
          f'the config asks for {model_identity(config)}. Use a new --workdir (or delete '
          'its fold_*/checkpoints) to train this model.')
  elif folds:
    raise errors.UserError(f'{workdir} holds checkpoints but no {MODEL_JSON}; cannot tell '
                           'which model they belong to. Use a new --workdir.')


def _latest_meta(workdir: pathlib.Path, fold: int) -> tuple[int | None, dict]:
  """(latest step, its meta) of a fold; meta is {} when that step holds no meta item."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = checkpoint_dir(workdir, fold)
  mngr = _manager(ckpt_dir)
  try:
    step = mngr.latest_step()
    # Orbax lists any step-named folder; one without the 'meta' item has nothing to read.
    if step is None or not (ckpt_dir / str(step) / 'meta').is_dir():
      return step, {}
    restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return step, dict(restored['meta'] or {})
  finally:
    mngr.close()


def write_run_files(workdir: str | os.PathLike, config) -> None:
  """Writes `config.json` and `model.json` into `workdir` (atomically, process 0 only)."""
  from ser_jax import reports  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  reports.atomic_write_json(workdir / MODEL_JSON, model_identity(config))
  reports.atomic_write_json(workdir / CONFIG_JSON, config.to_dict())


def read_config(workdir: str | os.PathLike):
  """The config a training workdir recorded (`config.json`).

  Raises:
    UserError: `workdir` has no config.json.
  """
  from ser_jax import config_lib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(workdir) / CONFIG_JSON
  if not path.exists():
    runs = sorted(d.name for d in pathlib.Path(workdir).glob('seed_*')
                  if (d / CONFIG_JSON).exists())
    if runs:  # the root of a --seeds run
      raise errors.UserError(
          f'{workdir} holds the runs of --seeds ({", ".join(runs)}), not one run: pass one, '
          f'e.g. --workdir={pathlib.Path(workdir) / runs[0]} (launch/evaluate.py also takes '
          f'several, comma-separated, and evaluates their ensemble: --workdir='
          f'{",".join(str(pathlib.Path(workdir) / r) for r in runs)})')
    raise errors.UserError(f'{path} does not exist: {workdir} is not a training workdir '
                           '(pass --config=configs/<model>.py to say which model it is)')
  return config_lib.from_dict(json.loads(path.read_text()))


# ----------------------------------------------------------------------------- training


def _manager(ckpt_dir: pathlib.Path, *, keep: int | None = None):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if keep is None:  # reading only
    return ocp.CheckpointManager(ckpt_dir, item_names=ITEMS)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max(1, int(keep)), create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(ckpt_dir, options=options, item_names=ITEMS)


def _restore(mngr, step: int, target=None) -> tuple[Any, dict]:
  """(state, meta) of `step`; `target` None restores the saved arrays as they are."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  return restored['state'], dict(restored['meta'] or {})


def _from_process_0(value: int) -> int:
  """Process 0's `value` on every host (the value itself with one process)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def _agree_on_step(step):
  """All hosts resume from process 0's latest step."""
  value = _from_process_0(-1 if step is None else int(step))
  return None if value < 0 else value


class FoldCheckpoints:
  """One fold's checkpoints during training: asynchronous saves, the last `keep` kept.

  Use as a context manager: leaving it waits for the last save to be written.
  """

  def __init__(self, workdir: str | os.PathLike, fold: int, keep: int):
    self.fold = fold
    self.directory = checkpoint_dir(workdir, fold)
    self._mngr = _manager(self.directory, keep=keep)
    self._watchers: list[threading.Thread] = []

  def latest_step(self) -> int | None:
    """The latest finished step (process 0's, on every host), or None."""
    return _agree_on_step(self._mngr.latest_step())

  def restore(self, step: int, target) -> tuple[Any, dict]:
    """(state, meta) of `step`, restored into `target` (shapes, dtypes, shardings)."""
    state, meta = _restore(self._mngr, step, target)
    if int(state.step) != step:
      raise errors.CheckpointError(f'{self.directory}: checkpoint {step} holds step '
                                   f'{int(state.step)}')
    return state, meta

  def save(self, step: int, state, meta: dict) -> None:
    """Starts saving `state` (global arrays) and `meta` (JSON) as `step`.

    'checkpoint saved at step N' is logged once Orbax has committed the step (its
    folder renamed into place), by a thread that waits for that; until then a kill
    leaves the previous checkpoint as the latest.
    """
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    watcher = threading.Thread(target=self._log_when_committed,
                               args=(step, meta.get('epoch')), daemon=True,
                               name=f'checkpoint_{step}_commit')
    watcher.start()
    self._watchers.append(watcher)

  def _log_when_committed(self, step: int, epoch) -> None:
    try:
      # Returns once the save in flight (this one, or a later one, which Orbax starts
      # only after this one is committed) is finished.
      self._mngr.wait_until_finished()
    except Exception:  # pylint: disable=broad-except
      # A failed save: the main thread gets the error at its next save or on exit.
      return
    log.info('Fold %d: checkpoint saved at step %d (epoch %s)', self.fold, step, epoch)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    try:
      self._mngr.wait_until_finished()
    finally:
      for watcher in self._watchers:
        watcher.join()
      self._mngr.close()


# ----------------------------------------------------------------------------- lock


@contextlib.contextmanager
def training_lock(workdir: str | os.PathLike):
  """Holds `workdir/train.lock` while one training run uses the workdir.

  Process 0 takes the lock; every host gets its verdict. The lock is an `flock` on the
  file (the kernel releases it when the process ends, however it ends), and the file
  says who holds it: '<pid> <host>'. A second run refuses with one line naming the
  holder. A file left by a run that died (this host, its process gone) is taken over
  with a warning; one naming another host is refused, since that process cannot be
  checked from here. When the run ends the file is emptied rather than deleted (a run
  that opened it just before a deletion would lock a file nobody else sees).

  Raises:
    UserError: another run holds the workdir.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(workdir) / LOCK_FILE
  fd, problem = None, ''
  if jax.process_index() == 0:
    try:
      fd = _acquire_lock(path)
    except errors.UserError as e:
      problem = str(e)
  if _from_process_0(int(bool(problem))) and not problem:
    problem = f'process 0 could not lock {path} (its log says why)'
  if problem:
    raise errors.UserError(problem)
  try:
    yield
  finally:
    if fd is not None:
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)


def _acquire_lock(path: pathlib.Path) -> int:
  """Locks `path` (created if missing), writes '<pid> <host>' into it; returns its fd."""
  path.parent.mkdir(parents=True, exist_ok=True)
  host = socket.gethostname()
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise errors.UserError(
          f'{path.parent} is in use by another training run ({_holder_text(fd)}; lock '
          f'file {path}): wait for it to finish, or use another --workdir') from None
    holder = _read_holder(fd)
    if holder is not None:
      pid, holder_host = holder
      if holder_host != host:
        raise errors.UserError(
            f'{path} says process {pid} on host {holder_host} trains in {path.parent}; it '
            f'cannot be checked from {host}. If no run is active there, delete {path}')
      if pid != os.getpid() and _alive(pid):
        raise errors.UserError(
            f'{path} says process {pid} on this host trains in {path.parent}, and it is '
            f'running. If it is not a training run of this workdir, delete {path}')
      log.warning('%s: taking over the lock of process %d on %s, which no longer runs '
                  '(a run that was killed)', path, pid, holder_host)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()} {host}\n'.encode(), 0)
    os.fsync(fd)
    return fd
  except BaseException:
    os.close(fd)  # also releases the flock
    raise


def _read_holder(fd: int) -> tuple[int, str] | None:
  """(pid, host) from a lock file's '<pid> <host>'; None when empty or unreadable."""
  text = os.pread(fd, 4096, 0).decode('utf-8', 'replace').split()
  if len(text) == 2 and text[0].isdigit():
    return int(text[0]), text[1]
  return None


def _holder_text(fd: int) -> str:
  holder = _read_holder(fd)
  return f'process {holder[0]} on host {holder[1]}' if holder else 'holder unknown'


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


# ----------------------------------------------------------------------------- reading


def restore_fold(workdir: str | os.PathLike, fold: int, step: int | None = None,
                 config=None) -> tuple[dict, dict, int]:
  """Restores `{'params', 'batch_stats'}` (numpy) of a training checkpoint.

  Args:
    workdir: the training run's folder.
    fold: fold index (`<workdir>/fold_<fold>/checkpoints`).
    step: checkpoint step; None: the latest.
    config: when given, the checkpoint's recorded model identity must be its.

  Returns:
    (variables, meta, step): meta is the JSON saved with the checkpoint.

  Raises:
    UserError: no such workdir/fold/step, or a checkpoint of another model.
  """
  import jax  # pylint: disable=g-import-not-at-top
  ckpt_dir = checkpoint_dir(workdir, fold)
  if not ckpt_dir.is_dir():
    have = available_folds(workdir) if pathlib.Path(workdir).is_dir() else []
    raise errors.UserError(f'no checkpoint for fold {fold}: {ckpt_dir} does not exist '
                           f'(folds with checkpoints in {workdir}: {have or "none"})')
  mngr = _manager(ckpt_dir)
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise errors.UserError(f'{ckpt_dir} holds no finished checkpoint')
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise errors.UserError(f'{ckpt_dir} has no step {step}; it has steps {steps}')
    # No target tree: the raw arrays come back whatever optimiser state was saved, and only
    # the model's variables are kept.
    state, meta = _restore(mngr, step)
  finally:
    mngr.close()
  if config is not None and meta.get('model') and not same_model(meta['model'], config):
    raise errors.UserError(
        f'{ckpt_dir} step {step} holds model {meta["model"]}, but the config asks for '
        f'{model_identity(config)}; evaluate it with the config it was trained with '
        '(leave out --config to use the workdir\'s config.json)')
  variables = {'params': state['params'], 'batch_stats': state.get('batch_stats') or {}}
  return jax.tree.map(np.asarray, variables), meta, int(step)


# ----------------------------------------------------------------------------- imported


def save_variables(path: str | os.PathLike, variables) -> None:
  """Saves a variables tree (numpy leaves) as one Orbax StandardCheckpointer directory."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.fspath(path), variables)
  checkpointer.wait_until_finished()


def is_checkpoint(path: str | os.PathLike) -> bool:
  """Whether `path` is a finished Orbax checkpoint directory."""
  return os.path.exists(os.path.join(os.fspath(path), '_CHECKPOINT_METADATA'))


def restore_variables(path: str | os.PathLike):
  """The tree `save_variables` wrote (arrays as saved)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(os.fspath(path))
