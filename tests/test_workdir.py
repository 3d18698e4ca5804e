"""Tests of what a training workdir guarantees (ser_jax/checkpoints.py, issue 11): a resume
with settings that could change the trained model is refused, naming every differing
field; 'checkpoint saved' is logged only once Orbax has committed the step; one training
run at a time holds the workdir's lock.

One tiny training run (tests/test_train.py's TinyNet on synthetic clips, 2 epochs) is
shared by the module: it starts over a stale lock file and with Orbax's commit slowed
down, and its checkpoints are then the record every refusal is checked against.
"""
import logging
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import test_train  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import errors
from ser_jax import models
from ser_jax import train


def _base_config():
  return test_train.tiny_config(**{'num_epochs': 2, 'checkpoint.every_epochs': 1})


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


class _Records(logging.Handler):
  """Keeps every record; for 'checkpoint saved at step N', whether N was committed then."""

  def __init__(self, ckpt_dir):
    super().__init__(logging.INFO)
    self.ckpt_dir, self.messages, self.saved = ckpt_dir, [], []

  def emit(self, record):
    message = record.getMessage()
    self.messages.append(message)
    m = re.search(r'checkpoint saved at step (\d+)', message)
    if m:
      step_dir = self.ckpt_dir / m.group(1)
      self.saved.append((int(m.group(1)), (step_dir / '_CHECKPOINT_METADATA').exists()))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, records, dead pid) of a 2-epoch run started over a stale lock."""
  from orbax.checkpoint._src.checkpointers import async_checkpointer  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('trained')
  dead = _dead_pid()
  (workdir / checkpoints.LOCK_FILE).write_text(f'{dead} {socket.gethostname()}\n')
  records = _Records(checkpoints.checkpoint_dir(workdir, 0))
  logger = logging.getLogger('ser_jax')
  level = logger.level
  real_commit = async_checkpointer._on_commit_callback  # pylint: disable=protected-access

  def slow_commit(*args, **kwargs):  # the step folder appears 0.5 s after the save starts
    time.sleep(0.5)
    return real_commit(*args, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(models.MODELS, 'tiny', test_train.TinyNet)
    mp.setattr(async_checkpointer, '_on_commit_callback', slow_commit)
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
      train.train_and_evaluate(_base_config(), workdir,
                               examples=test_train.synthetic_examples())
    finally:
      logger.removeHandler(records)
      logger.setLevel(level)
  return workdir, records, dead


# ----------------------------------------------------------------------------- commit


def test_checkpoint_saved_is_logged_after_the_commit(trained):
  """Issue 11, item 13: each step is logged once, and only when its folder is final."""
  _, records, _ = trained
  assert records.saved == [(4, True), (8, True)]


# ----------------------------------------------------------------------------- lock


def test_a_stale_lock_is_taken_over_with_a_warning(trained):
  workdir, records, dead = trained
  assert any(f'taking over the lock of process {dead} on {socket.gethostname()}, which no '
             'longer runs' in m for m in records.messages)
  assert (workdir / checkpoints.LOCK_FILE).read_text() == ''  # released at the end


def test_a_second_run_is_refused_while_one_holds_the_lock(tmp_path, monkeypatch):
  """Issue 11, item 14: one line naming the holder; nothing of the workdir is touched."""
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  with checkpoints.training_lock(tmp_path):
    with pytest.raises(errors.UserError,
                       match=rf'{tmp_path} is in use by another training run \(process '
                       rf'\d+ on host {re.escape(socket.gethostname())}; lock file '):
      train.train_and_evaluate(_base_config(), tmp_path,
                               examples=test_train.synthetic_examples())
  assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoints.LOCK_FILE]
  with checkpoints.training_lock(tmp_path):  # free again once released
    pass


def test_a_lock_of_another_host_or_a_live_process_is_refused(tmp_path):
  lock = tmp_path / checkpoints.LOCK_FILE
  lock.write_text('4242 some-other-host\n')
  with pytest.raises(errors.UserError, match=r'says process 4242 on host some-other-host '
                     r'trains in .*If no run is active there, delete'):
    with checkpoints.training_lock(tmp_path):
      pass
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    lock.write_text(f'{sleeper.pid} {socket.gethostname()}\n')
    with pytest.raises(errors.UserError, match=rf'says process {sleeper.pid} on this host '
                       r'trains in .*and it is running'):
      with checkpoints.training_lock(tmp_path):
        pass
  finally:
    sleeper.kill()
    sleeper.wait()
  assert lock.read_text() == f'{sleeper.pid} {socket.gethostname()}\n'  # left as it was


# ----------------------------------------------------------------------------- resume

# One changed value per training-relevant field of the config (each differs from
# _base_config()); test_every_field_is_either_compared_or_resumable keeps the list whole.
CHANGES = [
    ('seed', 42), ('model.name', 'cnnx'), ('model.num_classes', 8),
    ('model.dtype', 'bfloat16'), ('model.kwargs', {'dropout': 0.5}),
    ('data.name', 'ravdess/song'), ('data.frontend', 'panns32k'),
    ('data.input_shape', (16, 32)), ('data.crop_mode', 'crop_pad'),
    ('data.specaugment.enabled', True), ('data.specaugment.num_freq_masks', 1),
    ('data.specaugment.max_freq_width', 8), ('data.specaugment.num_time_masks', 1),
    ('data.specaugment.max_time_width', 8), ('data.mixup_alpha', 0.2),
    ('data.extra_train', ('ser_tess',)), ('data.sampling_weights', (1.0, 0.5)),
    ('data.version', '1.0.0'),
    ('data.time_stretch', 0.1), ('data.freq_warp', 0.1), ('data.freq_mixstyle', 0.5),
    ('data.freq_mixstyle_alpha', 0.4), ('data.eval_frames', 64),
    ('data.normalize', 'utterance'),
    ('folds.scheme', 'kfold'), ('folds.k', 5), ('folds.seed', 1), ('folds.test_actors', (3,)),
    ('folds.validation_actors', 2), ('folds.validation_seed', 1), ('batch_size', 8),
    ('optimizer.name', 'adamw'), ('optimizer.learning_rate', 1e-3),
    ('optimizer.weight_decay', 0.0), ('optimizer.grad_clip_norm', 1.0),
    ('optimizer.label_smoothing', 0.1), ('optimizer.trainable', '^head/'),
    ('optimizer.ema_decay', 0.99), ('optimizer.layer_decay', 0.8),
    ('optimizer.layer_groups', ('^head/',)),
    ('distill.teachers', ('/t/a',)), ('distill.weight', 0.5), ('distill.temperature', 2.0),
    ('schedule.name', 'warmup_cosine'),
    ('schedule.warmup_epochs', 1.0), ('parallel', 'jit'), ('init.pretrained', '/w/x.pth'),
    ('init.source', 'panns_cnn14'), ('init.dont_load', ('head',)),
]


def _field(key, value):
  return f'{key}.{next(iter(value))}' if isinstance(value, dict) else key


@pytest.mark.parametrize('key,value', CHANGES, ids=[k for k, _ in CHANGES])
def test_a_changed_training_setting_is_refused_naming_it(trained, key, value):
  """Issue 11, item 1: one line naming the field, its recorded and its new value."""
  workdir, _, _ = trained
  config = test_train.tiny_config(**{'num_epochs': 2, 'checkpoint.every_epochs': 1,
                                     key: value})
  with pytest.raises(errors.UserError) as e:
    checkpoints.check_workdir(config, workdir)
  message = str(e.value)
  assert '\n' not in message
  assert re.search(rf'fold_0/checkpoints step 8 was trained with other settings: '
                   rf'{re.escape(_field(key, value))} \(', message), message
  assert 'A resumed run may change only log_every_steps, ' in message
  assert message.endswith('use a new --workdir.')


def test_every_field_is_either_compared_or_resumable():
  leaves = set(config_lib._flatten(config_lib.default().to_dict()))  # pylint: disable=protected-access
  compared = {k for k, _ in CHANGES} - {'model.kwargs'}  # a free-form dict: no leaves
  assert leaves == compared | set(config_lib.RESUMABLE_FIELDS) | {'num_epochs'}


def test_several_changes_are_listed_in_one_line(trained):
  workdir, _, _ = trained
  config = test_train.tiny_config(**{'num_epochs': 2, 'seed': 7, 'batch_size': 8})
  with pytest.raises(errors.UserError, match=r'other settings: batch_size \(4 -> 8\); seed '
                     r'\(41 -> 7\)\. A resumed'):
    checkpoints.check_workdir(config, workdir)


def test_a_refused_run_leaves_the_workdir_as_it_was(trained, monkeypatch):
  workdir, _, _ = trained
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  before = {p: p.read_bytes() for p in workdir.glob('*.json')}
  config = test_train.tiny_config(**{'num_epochs': 2, 'optimizer.learning_rate': 1e-3})
  with pytest.raises(errors.UserError, match=r'optimizer\.learning_rate \(0\.03 -> 0\.001\)'):
    train.train_and_evaluate(config, workdir, examples=test_train.synthetic_examples())
  assert {p: p.read_bytes() for p in workdir.glob('*.json')} == before
  assert sorted(p.name for p in checkpoints.checkpoint_dir(workdir, 0).iterdir()) == ['4', '8']


def test_resuming_on_other_training_data_is_refused(trained, monkeypatch):
  """The same config over other clips (e.g. data.data_dir at another build): refused."""
  workdir, _, _ = trained
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  fewer = test_train.synthetic_examples(clips_per_actor=4)  # 12 training clips: 3 steps
  with pytest.raises(errors.UserError, match=r'step 8 was trained on other data than fold 0 '
                     r'holds now: 8 steps in 2 epochs on speakers \[1, 2, 3\], where the data '
                     r'gives 3 steps per epoch \(12 clips\) on speakers \[1, 2, 3\]'):
    train.train_and_evaluate(_base_config(), workdir, examples=fewer)
  assert sorted(p.name for p in checkpoints.checkpoint_dir(workdir, 0).iterdir()) == ['4', '8']


def test_what_cannot_change_the_model_may_change(trained):
  workdir, _, _ = trained
  config = test_train.tiny_config(**{
      'num_epochs': 7,  # constant learning rate: may grow
      'log_every_steps': 3, 'eval_every_epochs': 2, 'eval_batch_size': 8,
      'checkpoint.every_epochs': 3, 'checkpoint.keep': 5, 'data.data_dir': '/elsewhere',
      'data.manual_dir': '/audio', 'data.download': False, 'data.num_workers': 2,
      'folds.which': (0,), 'init.expect_pretrained': True, 'selection_rule': 'by hand'})
  checkpoints.check_workdir(config, workdir)


def _fake_checkpoint(workdir, config, epoch):
  """A fold-0 checkpoint whose meta records `config` at `epoch` (no training needed)."""
  checkpoints.write_run_files(workdir, config)
  with checkpoints.FoldCheckpoints(workdir, 0, keep=1) as ckpts:
    ckpts.save(epoch, {'step': np.int64(epoch)},
               dict(checkpoints.run_record(config), epoch=epoch, history=[], fold=0))


def test_num_epochs_may_not_change_under_a_schedule_that_uses_it(tmp_path):
  config = test_train.tiny_config(**{'num_epochs': 4, 'schedule.name': 'warmup_cosine',
                                     'schedule.warmup_epochs': 1.0})
  _fake_checkpoint(tmp_path, config, epoch=2)
  checkpoints.check_workdir(config, tmp_path)  # the same plan: resumable
  grown = config.copy_and_resolve_references()
  grown.num_epochs = 6
  with pytest.raises(errors.UserError, match=r"other settings: num_epochs \(4 -> 6; the "
                     r"'warmup_cosine' schedule depends on it\)"):
    checkpoints.check_workdir(grown, tmp_path)


def test_num_epochs_may_not_fall_below_the_epochs_trained(tmp_path):
  config = test_train.tiny_config(num_epochs=5)
  _fake_checkpoint(tmp_path, config, epoch=4)
  shorter = config.copy_and_resolve_references()
  shorter.num_epochs = 4  # constant schedule, not below the 4 trained epochs
  checkpoints.check_workdir(shorter, tmp_path)
  shorter.num_epochs = 3
  with pytest.raises(errors.UserError, match=r'num_epochs \(5 -> 3; the checkpoint has '
                     r'trained 4 epochs\)'):
    checkpoints.check_workdir(shorter, tmp_path)


def test_records_from_before_a_field_existed_compare_with_its_default(tmp_path):
  config = test_train.tiny_config()
  record = config.to_dict()
  del record['folds']['validation_actors']  # added later: the record means its default
  checkpoints.write_run_files(tmp_path, config)
  with checkpoints.FoldCheckpoints(tmp_path, 0, keep=1) as ckpts:
    ckpts.save(4, {'step': np.int64(4)}, {'config': record, 'epoch': 1, 'history': []})
  checkpoints.check_workdir(config, tmp_path)
  other = config.copy_and_resolve_references()
  other.folds.validation_actors = 2
  with pytest.raises(errors.UserError, match=r'folds\.validation_actors \(0 -> 2\)'):
    checkpoints.check_workdir(other, tmp_path)
