"""Multi-process (multi-host) training on one machine: 2 JAX processes vs 1, same global batch.

Two processes are started here, joined by `jax.distributed` over localhost (CPU collectives:
gloo, jax's default `jax_cpu_collectives_implementation`), each with one CPU device, through
`ser_jax.distributed.maybe_initialize()` reading `JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, as a GPU/CPU cluster launch would set them. They
train a tiny BatchNorm CNN on test_train's synthetic clips in one shared workdir, with
`config.parallel` 'pmap' and 'jit'; each reads only its half of every global batch. The final metrics, the confusion matrix and every
epoch's losses must equal a 1-process run with the same global batch (within 1e-5).

The 2-process job runs in two parts (1 epoch, then the same command with 2 epochs), so the
second part must resume both processes from the same checkpoint step. Only process 0 may
write reports.

Fast tests at the end check when `maybe_initialize()` initialises and where its settings
come from. This module is also the worker (`python tests/test_multihost.py WORKDIR NUM_EPOCHS PARALLEL`).
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import flax.linen as nn
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

import test_train  # pylint: disable=g-import-not-at-top,wrong-import-position

TOL = 1e-5
GLOBAL_BATCH = 4  # 2 rows per process; 15 training clips: 4 steps per epoch, last partial


class TinyNet(nn.Module):
  """test_train's tiny CNN without the conv bias in front of BatchNorm.

  That bias gets an exactly-zero gradient (BatchNorm removes it) plus float noise, which Adam
  rescales to full-size steps: it random-walks differently on 1 and 2 devices, and moves
  eval-mode outputs (running statistics do not cancel it) by ~1% (measured). Without it,
  every parameter has a real gradient and the comparison is well-conditioned.
  """
  num_classes: int = 8
  dtype: object = None  # the registry passes a compute dtype; float32 here regardless
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train=False, mask=None):  # pylint: disable=redefined-outer-name
    del mask
    x = nn.Conv(4, (3, 3), strides=2, use_bias=False, name='conv')(x)  # (B, mel/2, time/2, 4)
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name,
                     name='bn')(x)
    x = nn.relu(x).mean(axis=(1, 2))  # (B, 4)
    return nn.Dense(self.num_classes, name='head')(x)


def _examples():
  """test_train's synthetic clips, centred: its -40 dB offset makes early BatchNorm running
  statistics far off, so eval logits reach the hundreds and float summation order alone
  moves the eval loss by ~1e-4 (measured); centred clips keep the comparison well-conditioned."""
  ex = test_train.synthetic_examples()
  ex.images = [im + 40.0 for im in ex.images]
  return ex


def _config(num_epochs, parallel):
  return test_train.tiny_config(**{'num_epochs': num_epochs, 'parallel': parallel,
                                   'batch_size': GLOBAL_BATCH,
                                   'eval_batch_size': GLOBAL_BATCH,
                                   'checkpoint.every_epochs': 1})


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _worker_env(process_id, num_processes, port):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # 1 CPU device each
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
             JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
             JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(process_id))
  return env


def _run_job(workdir, num_epochs, parallel, num_processes=2, timeout=240):
  """Starts every process of one job and waits; returns each process's output."""
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, __file__, str(workdir), str(num_epochs), parallel],
                            env=_worker_env(i, num_processes, port), cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  outputs, deadline = [], time.time() + timeout
  try:
    for p in procs:
      out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
      outputs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f'process {i} failed:\n{out[-4000:]}'
  return outputs


def _summary(output):
  lines = [l for l in output.splitlines() if l.startswith('SUMMARY ')]
  assert lines, output[-3000:]
  return json.loads(lines[-1][len('SUMMARY '):])


@pytest.mark.slow
@pytest.mark.parametrize('parallel', ['pmap', 'jit'])
def test_two_processes_match_one(tmp_path, parallel, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top

  multi = tmp_path / 'two_processes'
  first = _run_job(multi, 1, parallel)
  for out in first:
    assert 'process_count=2' in out and 'devices=2' in out, out[-2000:]
  second = _run_job(multi, 2, parallel)
  # Both processes resumed from the same step (end of epoch 1: 4 steps), agreed via process 0.
  for i, out in enumerate(second):
    assert 'resuming from checkpoint step 4 (epoch 1 of 2)' in out, (i, out[-3000:])
  summaries = [_summary(out) for out in second]
  assert summaries[0] == summaries[1]  # every process returns the same cross-validation

  # Reference: this process alone (one CPU device), same global batch, 2 epochs straight.
  assert jax.process_count() == 1
  monkeypatch.setitem(models.MODELS, 'tiny', TinyNet)
  single = tmp_path / 'one_process'
  summary = train.train_and_evaluate(_config(2, parallel), single,
                                     examples=_examples())
  test_train.assert_outcomes_close(test_train.fold_outcome(single),
                                   test_train.fold_outcome(multi), tol=TOL)
  for k in ('accuracy', 'precision', 'recall', 'f1'):
    assert abs(summary['mean'][k] - summaries[0][k]) <= TOL, k
  # Written once: one report and one TensorBoard stream, from process 0 only.
  assert len(list((multi / 'tensorboard' / 'fold_0').glob('events.out.tfevents.*'))) == 2
  steps = sorted(int(p.name) for p in (multi / 'fold_0' / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == 8


# ----------------------------------------------------------------------------- start-up logic


@pytest.fixture
def clean_env(monkeypatch):
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
               'SER_JAX_DISTRIBUTED', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_settings_precedence(clean_env):
  from ser_jax import distributed  # pylint: disable=g-import-not-at-top
  clean_env.setenv('JAX_COORDINATOR_ADDRESS', 'envhost:1')
  clean_env.setenv('JAX_NUM_PROCESSES', '4')
  clean_env.setenv('JAX_PROCESS_ID', '3')
  assert distributed.resolve_settings() == ('auto', 'envhost:1', 4, 3)
  # Arguments win over the environment.
  assert distributed.resolve_settings('arg:2', 2, 0, 'off') == ('off', 'arg:2', 2, 0)
  clean_env.setenv('JAX_PROCESS_ID', 'x')
  with pytest.raises(ValueError, match='JAX_PROCESS_ID'):
    distributed.resolve_settings()
  with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
    distributed.resolve_settings(mode='sometimes')


def test_when_to_initialize(clean_env):
  from ser_jax import distributed  # pylint: disable=g-import-not-at-top
  should = distributed.should_initialize
  assert not should('auto', None, None, None)  # one process on a machine without TPUs
  assert not should('auto', 'h:1', 1, 0)
  assert should('auto', 'h:1', 2, 0)
  assert not should('off', 'h:1', 2, 0)
  assert should('on', None, None, None)
  clean_env.setenv('SLURM_NTASKS', '8')
  assert should('auto', None, None, None)  # JAX's Slurm detection takes it from here
  # A single process returns at once without touching jax.distributed (idempotent too).
  clean_env.delenv('SLURM_NTASKS')
  assert not distributed.maybe_initialize()
  assert not distributed.maybe_initialize()


def test_incomplete_settings_fail_fast(clean_env):
  from ser_jax import distributed  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='coordinator_address, process_id not set'):
    distributed.maybe_initialize(num_processes=2)
  with pytest.raises(ValueError, match=r'process_id=2 outside 0\.\.1'):
    distributed.maybe_initialize('127.0.0.1:1', 2, 2)


def _worker(workdir, num_epochs, parallel):
  """One process of a job: initialise jax.distributed from the environment, then train."""
  # tensorboardX imports torch when it is installed (a test-only dependency): ~10 s of
  # start-up per process on a busy 2-core machine, for nothing here.
  sys.modules['torch'] = None
  import logging  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')
  logging.getLogger('absl').setLevel(logging.WARNING)
  from ser_jax import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.maybe_initialize()
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  print(f'process_index={jax.process_index()} process_count={jax.process_count()} '
        f'devices={jax.device_count()}', flush=True)
  models.MODELS['tiny'] = TinyNet  # this worker process only
  summary = train.train_and_evaluate(_config(int(num_epochs), parallel), workdir,
                                     examples=_examples())
  print('SUMMARY ' + json.dumps(summary['mean'], sort_keys=True), flush=True)


if __name__ == '__main__':
  _worker(*sys.argv[1:])
