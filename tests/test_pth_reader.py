"""Tests for reading torch.save files without PyTorch (`ser_jax.torch_file`, through
`ser_jax.pretrained.load_state_dict`).

Checkpoints are written here with the real `torch.save`; they are read back in a
subprocess where `import torch` raises, and compared bit for bit with the tensors saved.
`run_without_torch` is shared with the other pretrained-weight tests.
"""
import collections
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import wave
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from ser_jax import pretrained  # pylint: disable=g-import-not-at-top

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Installed first in the child interpreter: any import of torch (or torch.*) fails.
_BLOCK_TORCH = textwrap.dedent('''\
    import sys
    class _BlockTorch:
      def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
          raise ImportError('torch is blocked in this test: ' + name)
        return None
    sys.meta_path.insert(0, _BlockTorch())
    ''')
_CHECK_NO_TORCH = textwrap.dedent('''
    assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]
    ''')


def run_without_torch(code, *args, timeout=600, check=True):
  """Runs `code` in a fresh Python where torch cannot be imported.

  Returns its stdout, or with `check=False` the CompletedProcess (any exit status).
  """
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO_ROOT), env.get('PYTHONPATH', '')])
  env.setdefault('JAX_PLATFORMS', 'cpu')
  script = _BLOCK_TORCH + textwrap.dedent(code) + _CHECK_NO_TORCH
  proc = subprocess.run([sys.executable, '-c', script, *map(str, args)], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout,
                        check=False)
  if not check:
    return proc
  if proc.returncode:
    raise AssertionError(f'torch-free subprocess failed:\n{proc.stdout}\n{proc.stderr}')
  return proc.stdout


def _sample_state_dict():
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 8, generator=g)
  return collections.OrderedDict(
      conv=torch.randn(4, 3, 3, 3, generator=g),
      transposed=base.t(),  # non-contiguous: strides (1, 8)
      window=base[2:, 1:5],  # storage offset 17, strides (8, 1)
      half=torch.randn(5, generator=g).half(),
      bf16=torch.randn(4, generator=g).bfloat16(),
      counter=torch.tensor(7),  # 0-d int64 (num_batches_tracked)
      int32=torch.arange(5, dtype=torch.int32),
      flag=torch.tensor([True, False]),
      empty=torch.zeros(0, 3),
      param=torch.nn.Parameter(torch.randn(2, generator=g)),
  )


def _as_bits(x):
  """numpy view used for exact comparison (bfloat16 has no numpy-native dtype)."""
  if x.dtype.name == 'bfloat16':
    return x.view(np.uint16)
  return x


def _torch_to_bits(t):
  t = t.detach()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(np.uint16)
  return t.numpy()


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """Checkpoints in every layout we support, and what each should read back as."""
  d = tmp_path_factory.mktemp('pth')
  sd = _sample_state_dict()
  expected = {k: _torch_to_bits(v) for k, v in sd.items()}
  files = {}
  for legacy in (False, True):
    tag = 'legacy' if legacy else 'zip'
    kw = dict(_use_new_zipfile_serialization=not legacy)
    files[f'{tag}_bare'] = d / f'{tag}_bare.pth'
    torch.save(sd, files[f'{tag}_bare'], **kw)
    # PANNs' wrapper: weights under 'model', next to training state that holds numpy
    # objects (which a weights-only reader must tolerate without resolving them).
    files[f'{tag}_panns'] = d / f'{tag}_panns.pth'
    torch.save({'iteration': 3, 'model': sd,
                'sampler': {'random_state': np.random.RandomState(0).get_state()}},
               files[f'{tag}_panns'], **kw)
  files['zip_state_dict_dp'] = d / 'zip_state_dict_dp.pt'
  torch.save({'epoch': 1, 'state_dict': {'module.' + k: v for k, v in sd.items()}},
             files['zip_state_dict_dp'])
  return files, expected


def test_reads_every_layout_without_torch(saved):
  files, expected = saved
  out_dir = pathlib.Path(files['zip_bare']).parent / 'out'
  out_dir.mkdir(exist_ok=True)
  run_without_torch('''
      import pathlib, numpy as np
      from ser_jax import pretrained
      out = pathlib.Path(sys.argv[1])
      for path in sys.argv[2:]:
        sd = pretrained.load_state_dict(path)
        bits = {k: (v.view(np.uint16) if v.dtype.name == 'bfloat16' else v)
                for k, v in sd.items()}
        np.savez(out / (pathlib.Path(path).stem + '.npz'), **bits)
        print(pathlib.Path(path).stem, sd['bf16'].dtype.name)
      ''', out_dir, *files.values())
  for name in files:
    with np.load(out_dir / f'{name}.npz') as got:
      assert sorted(got.files) == sorted(expected), name
      for k, want in expected.items():
        assert got[k].dtype == want.dtype, (name, k, got[k].dtype, want.dtype)
        assert got[k].shape == want.shape, (name, k)
        np.testing.assert_array_equal(got[k], want, err_msg=f'{name}:{k}')


def test_dtypes_in_process(saved):
  files, _ = saved
  sd = pretrained.load_state_dict(files['zip_panns'])
  assert sd['bf16'].dtype.name == 'bfloat16'
  assert sd['half'].dtype == np.float16
  assert sd['counter'].dtype == np.int64 and sd['counter'].shape == ()
  assert sd['transposed'].flags.c_contiguous


def test_not_a_checkpoint(tmp_path):
  text = tmp_path / 'notes.pth'
  text.write_text('these are not weights\n')
  with pytest.raises(pretrained.CheckpointError, match=r'notes\.pth is a text file'):
    pretrained.load_state_dict(text)
  wav = tmp_path / 'clip.wav'
  with wave.open(str(wav), 'wb') as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(np.zeros(160, np.int16).tobytes())
  with pytest.raises(pretrained.CheckpointError, match=r'clip\.wav is a RIFF/WAV audio file'):
    pretrained.load_state_dict(wav)
  plain = tmp_path / 'plain.pkl'
  plain.write_bytes(pickle.dumps({'a': 1}, protocol=2))
  with pytest.raises(pretrained.CheckpointError, match='no torch magic number'):
    pretrained.load_state_dict(plain)
  other_zip = tmp_path / 'other.zip'
  with zipfile.ZipFile(other_zip, 'w') as z:
    z.writestr('readme.txt', 'hi')
  with pytest.raises(pretrained.CheckpointError, match='not a torch.save checkpoint'):
    pretrained.load_state_dict(other_zip)
  with pytest.raises(pretrained.CheckpointError, match='is a directory'):
    pretrained.load_state_dict(tmp_path)


@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
@pytest.mark.parametrize('fraction', [0.05, 0.5, 0.98])
def test_truncated(saved, tmp_path, fmt, fraction):
  files, _ = saved
  raw = pathlib.Path(files[f'{fmt}_panns']).read_bytes()
  cut = tmp_path / 'cut.pth'
  cut.write_bytes(raw[:int(len(raw) * fraction)])
  with pytest.raises(pretrained.CheckpointError, match=r'cut\.pth.*(truncated|corrupt)'):
    pretrained.load_state_dict(cut)


def test_unsupported_objects(tmp_path):
  module = tmp_path / 'module.pth'
  torch.save(torch.nn.Linear(2, 3), module)  # the whole module, not its state_dict
  with pytest.raises(pretrained.CheckpointError,
                     match=r'pickled torch\.nn\.modules\.linear\.Linear object.*state_dict'):
    pretrained.load_state_dict(module)
  sparse = tmp_path / 'sparse.pth'
  torch.save({'w': torch.eye(3).to_sparse(), 'b': torch.zeros(3)}, sparse)
  with pytest.raises(pretrained.CheckpointError, match=r"entry 'w' is an object of class "
                     r'torch\._utils\._rebuild_sparse_tensor'):
    pretrained.load_state_dict(sparse)
  other = tmp_path / 'other.pth'
  torch.save({'epoch': 3, 'optimizer': {'lr': 0.1}}, other)
  with pytest.raises(pretrained.CheckpointError, match=r"keys \['epoch', 'optimizer'\]"):
    pretrained.load_state_dict(other)


class _Exploit:
  """Unpickling this with the standard pickle module would create `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_malicious_pickle_runs_nothing(tmp_path):
  marker = tmp_path / 'pwned'
  for legacy in (False, True):
    path = tmp_path / f'evil_{legacy}.pth'
    torch.save({'weight': torch.zeros(2), 'bias': _Exploit(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(pretrained.CheckpointError, match=r"entry 'bias'.*(posix|os)\.system"):
      pretrained.load_state_dict(path)
    assert not marker.exists()
