"""bench/: the quiet-machine guard (bench/machine.py) and that the scripts obey it."""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# bench/ is a folder of scripts, not a package: load its helper by path.
_spec = importlib.util.spec_from_file_location('bench_machine', REPO_ROOT / 'bench' / 'machine.py')
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)

SPIN = [sys.executable, '-c', 'while True: pass']
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))  # as installed: the package importable
needs_proc = pytest.mark.skipif(not os.path.exists('/proc/stat'), reason='reads /proc')


def test_busy_reasons():
  assert not machine.busy_reasons(0.3, 0.05, max_load=0.5, max_other_cpu=0.1)
  assert machine.busy_reasons(0.7, 0.05, 0.5, 0.1) == ['1-minute load average 0.70 > 0.5']
  assert machine.busy_reasons(0.1, 0.98, 0.5, 0.1) == ['other processes used 0.98 cores > 0.1']


def test_usage_between_counts_others_not_ours():
  tck = machine._CLK_TCK  # pylint: disable=protected-access
  a = machine.Snapshot(wall=10.0, busy=1000, steal=0, ours=300,
                       procs={7: (50, 'python spin.py'), 8: (5, 'sshd')})
  # Over 2 s: 6 CPU-seconds busy in all, 2 of them ours; pid 7 used 3 (two threads: 150% of
  # one core), pid 8 nothing, pid 9 started meanwhile and used 0.5; 0.5 went unnamed.
  b = machine.Snapshot(wall=12.0, busy=1000 + 6 * tck, steal=tck // 2, ours=300 + 2 * tck,
                       procs={7: (50 + 3 * tck, 'python spin.py'), 8: (5, 'sshd'),
                              9: (tck // 2, 'make')})
  u = machine.usage_between(a, b)
  assert u.seconds == 2.0 and u.other_cores == pytest.approx(2.0)
  assert u.steal_cores == pytest.approx(0.25)
  assert [(pid, round(pct)) for pid, pct, _ in u.top] == [(7, 150), (9, 25)]
  lines = machine.describe(u)
  assert 'spin.py' in lines[0] and 'make' in lines[1]
  assert 'short-lived or unnamed processes: 0.25 cores' in lines[2]


@needs_proc
def test_our_children_are_ours():
  """A child of this process (e.g. a dataset build worker) is not 'another process'."""
  child = subprocess.Popen(SPIN)
  try:
    time.sleep(0.3)
    a = machine.snapshot()
    time.sleep(1.0)
    b = machine.snapshot()
    # From another tree's point of view (a root pid that does not exist) it is someone else.
    assert child.pid in machine.snapshot(root_pid=1 << 30).procs
  finally:
    child.kill()
    child.wait()
  assert child.pid not in a.procs and child.pid not in b.procs
  assert b.ours - a.ours >= 0.1 * machine._CLK_TCK  # pylint: disable=protected-access


@needs_proc
def test_models_bench_refuses_while_another_process_spins():
  """bench/models.py on a machine where another process spins a core says so (naming the
  process) and exits without measuring or printing a ratio."""
  spinner = subprocess.Popen(SPIN)  # not bench/models.py's child: another process to it
  try:
    time.sleep(0.5)
    out = subprocess.run([sys.executable, 'bench/models.py', '--models=cnn_lstm',
                          '--quiet_sample_s=1'], cwd=REPO_ROOT, env=ENV, capture_output=True,
                         text=True, timeout=300)
  finally:
    spinner.kill()
    spinner.wait()
  assert out.returncode == machine.REFUSED_EXIT_STATUS, out.stdout + out.stderr
  assert 'machine busy' in out.stdout and 'Refusing to measure' in out.stdout
  assert re.search(rf'pid\s+{spinner.pid}\s', out.stdout), out.stdout
  assert 'flax/torch' not in out.stdout  # no table, no ratio


@pytest.mark.slow
@needs_proc
def test_models_bench_forced_marks_busy_rows():
  """--force measures anyway (tiny input) and gives "busy" instead of a ratio."""
  spinner = subprocess.Popen(SPIN)
  try:
    time.sleep(0.5)
    out = subprocess.run([sys.executable, 'bench/models.py', '--models=cnn_lstm', '--force',
                          '--frames=64', '--batch_size=4', '--steps=1', '--repeats=2',
                          '--quiet_sample_s=0.5'], cwd=REPO_ROOT, env=ENV,
                         capture_output=True, text=True, timeout=600, check=True)
  finally:
    spinner.kill()
    spinner.wait()
  row = [line for line in out.stdout.splitlines() if line.startswith('cnn_lstm ')]
  assert len(row) == 1, out.stdout
  assert re.search(r'\sbusy\s+\(.*machine busy', row[0]), row[0]


@pytest.mark.slow
def test_accelerator_bench_runs_on_cpu_with_tiny_settings(tmp_path):
  """bench/accelerator.py still runs on CPU (tiny input, forced past the quiet check)."""
  out = tmp_path / 'rows.json'
  subprocess.run([sys.executable, 'bench/accelerator.py', '--models=cnn_lstm',
                  '--batch_sizes=2', '--input_shape=128,64', '--dtypes=float32', '--steps=1',
                  '--warmup=0', '--force', '--quiet_sample_s=0.5', f'--json_out={out}'],
                 cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                 check=True)
  import json  # pylint: disable=g-import-not-at-top
  (row,) = json.loads(out.read_text())
  assert row['model'] == 'cnn_lstm' and row['examples_per_s'] > 0
  assert row['gflop_per_step'] > 0 and row['torch_examples_per_s'] > 0
