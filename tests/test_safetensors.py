"""`.safetensors` weights (`ser_jax.safetensors_file`, through `pretrained.load_state_dict`).

For every converter source in `convert.SOURCES`, the torch reference's state_dict (random
weights and BatchNorm statistics) is written three ways by the real writers: `torch.save`
(.pth), `safetensors.torch.save_file` and `safetensors.numpy.save_file`. In a subprocess
where torch cannot be imported, each file is read by content (file names are never
looked at) and must give the .pth's arrays bit for bit and the same converted variables.
"""
import collections
import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip('torch')
safetensors_numpy = pytest.importorskip('safetensors.numpy')
from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top

from ser_jax import convert  # pylint: disable=g-import-not-at-top
from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
from test_pth_reader import run_without_torch  # pylint: disable=g-import-not-at-top
import test_pretrained  # pylint: disable=g-import-not-at-top
import torch_reference  # pylint: disable=g-import-not-at-top
import torch_reference_efficientat  # pylint: disable=g-import-not-at-top


def _reference_state_dict(source, d):
  """{key: tensor} of the torch reference for `source`, as a published checkpoint has it."""
  if source == 'efficientat_mn':
    module = torch_reference_efficientat.MobileNetV3(width_mult=0.1, num_classes=10)
    torch_reference.randomize(module, seed=3)
    return module.state_dict()
  # pylint: disable-next=protected-access
  _, path = test_pretrained._build(test_pretrained.CASES[source], d)
  state = torch.load(path, map_location='cpu', weights_only=False)
  return state.get('model', state)  # PANNs' wrapper: safetensors files are flat


def test_every_source_has_a_case():
  assert set(convert.SOURCES) == set(test_pretrained.CASES) | {'efficientat_mn'}


def _write_three(source, d):
  """(.pth, safetensors.torch file, safetensors.numpy file) of `source`'s reference."""
  state = {k: v.contiguous() for k, v in _reference_state_dict(source, d).items()}
  pth, st_torch, st_numpy = (d / f'{source}.pth', d / f'{source}_torch.safetensors',
                             d / f'{source}_numpy.safetensors')
  torch.save(state, pth)
  safetensors_torch.save_file(state, st_torch, metadata={'format': 'pt'})
  safetensors_numpy.save_file({k: v.numpy() for k, v in state.items()}, st_numpy)
  return pth, st_torch, st_numpy


@pytest.fixture(scope='module')
def cnnx_files(tmp_path_factory):
  return _write_three('predecessor_cnnx', tmp_path_factory.mktemp('cnnx'))


@pytest.mark.slow  # builds and saves 12 reference models (VGG19-BN, ResNet18, ...): ~40 s
def test_every_source_reads_and_converts_alike_without_torch(tmp_path):
  written = {source: _write_three(source, tmp_path) for source in sorted(convert.SOURCES)}
  out = run_without_torch('''
      import json
      import numpy as np
      from ser_jax import convert, pretrained
      for source, paths in json.loads(sys.argv[1]).items():
        want = pretrained.load_state_dict(paths[0])
        want_vars = pretrained.flatten(convert.convert(want, source))
        for path in paths[1:]:
          got = pretrained.load_state_dict(path)
          assert list(got) == list(want) or sorted(got) == sorted(want), (path, sorted(got))
          for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, (path, k)
            np.testing.assert_array_equal(got[k], v, err_msg=f'{path}:{k}')
          got_vars = pretrained.flatten(convert.convert(got, source))
          assert sorted(got_vars) == sorted(want_vars), path
          for k, v in want_vars.items():
            np.testing.assert_array_equal(got_vars[k], v, err_msg=f'{path}:{k}')
        print('ok', source, len(want_vars))
      ''', json.dumps({s: [str(p) for p in paths] for s, paths in written.items()}))
  done = [line.split()[1] for line in out.splitlines() if line.startswith('ok ')]
  assert done == sorted(convert.SOURCES), out


def test_the_reader_is_chosen_by_content_not_name(cnnx_files, tmp_path):
  pth, st_torch, _ = cnnx_files
  renamed_st = tmp_path / 'weights.pth'
  renamed_st.write_bytes(st_torch.read_bytes())
  renamed_pth = tmp_path / 'weights.safetensors'
  renamed_pth.write_bytes(pth.read_bytes())
  want = pretrained.load_state_dict(pth)
  for path in (renamed_st, renamed_pth):
    got = pretrained.load_state_dict(path)
    assert sorted(got) == sorted(want)
    for k, v in want.items():
      np.testing.assert_array_equal(got[k], v)


def _write_raw(path, tensors, pad_header_to=None):
  """A safetensors file written by hand: {name: float32 array}; header padded with spaces."""
  header, offset, data = {}, 0, b''
  for name, value in tensors.items():
    raw = np.ascontiguousarray(value, '<f4').tobytes()
    header[name] = {'dtype': 'F32', 'shape': list(value.shape),
                    'data_offsets': [offset, offset + len(raw)]}
    offset += len(raw)
    data += raw
  text = json.dumps(header).encode()
  if pad_header_to:
    text += b' ' * (pad_header_to - len(text))
  path.write_bytes(struct.pack('<Q', len(text)) + text + data)


def test_a_header_length_starting_like_a_pickle_is_still_safetensors(tmp_path):
  """Header length 0x180: its first byte is 0x80, the first byte of every torch pickle."""
  path = tmp_path / 'w.safetensors'
  _write_raw(path, {'fc.weight': np.arange(6, dtype=np.float32).reshape(2, 3)},
             pad_header_to=0x180)
  assert path.read_bytes()[:1] == b'\x80'
  got = pretrained.load_state_dict(path)
  np.testing.assert_array_equal(got['fc.weight'], np.arange(6).reshape(2, 3))


def test_dtypes_and_data_parallel_prefix(tmp_path):
  g = torch.Generator().manual_seed(0)
  state = collections.OrderedDict(
      w=torch.randn(3, 2, generator=g), half=torch.randn(4, generator=g).half(),
      bf16=torch.randn(4, generator=g).bfloat16(), counter=torch.tensor(7),
      flag=torch.tensor([True, False]))
  path = tmp_path / 'dp.safetensors'
  safetensors_torch.save_file({'module.' + k: v for k, v in state.items()}, path)
  got = pretrained.load_state_dict(path)
  assert sorted(got) == sorted(state)
  assert got['bf16'].dtype.name == 'bfloat16' and got['half'].dtype == np.float16
  assert got['counter'].dtype == np.int64 and got['counter'].shape == ()
  np.testing.assert_array_equal(got['bf16'].view(np.uint16),
                                state['bf16'].view(torch.int16).numpy().view(np.uint16))
  np.testing.assert_array_equal(got['flag'], [True, False])
  got['w'][0, 0] = 1.0  # an own, writable copy, not a read-only memory map


@pytest.mark.parametrize('cut', [0.5, 0.99])
def test_truncated_file_is_one_error_naming_it(cnnx_files, tmp_path, cut):
  _, st_torch, _ = cnnx_files
  data = st_torch.read_bytes()
  path = tmp_path / 'cut.safetensors'
  path.write_bytes(data[:int(len(data) * cut)])
  with pytest.raises(pretrained.CheckpointError, match=rf'{path}') as e:
    pretrained.load_state_dict(path)
  assert '\n' not in str(e.value)


def test_corrupt_header_is_one_error_naming_it(tmp_path):
  path = tmp_path / 'bad.safetensors'
  text = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 99]}}'
  path.write_bytes(struct.pack('<Q', len(text)) + text + b'\0' * 8)
  with pytest.raises(pretrained.CheckpointError, match=rf'{path}: not a readable '
                     'safetensors file'):
    pretrained.load_state_dict(path)


def test_load_pretrained_takes_safetensors_like_pth(cnnx_files):
  """What init.pretrained and --weights do with a weights file."""
  from ser_jax import config_lib  # pylint: disable=g-import-not-at-top
  from ser_jax import model_init  # pylint: disable=g-import-not-at-top
  pth, st_torch, _ = cnnx_files
  config = config_lib.default()
  config.model.name, config.init.source = 'cnnx', 'predecessor_cnnx'
  shapes = model_init.init_variables(config, abstract=True)
  want, got = (pretrained.flatten(pretrained.load_pretrained(
      p, shapes, frontend='predecessor48k', source='predecessor_cnnx')) for p in (pth, st_torch))
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v)
