"""Reading `torch.save` files (`.pth`/`.pt`) without PyTorch.

`load_torch_checkpoint(path) -> dict[str, np.ndarray]` reads the zip format (PyTorch >=
1.6: `<archive>/data.pkl` plus one raw storage per tensor under `<archive>/data/<key>`)
and the older non-zip format (magic number, three small pickles, the object pickle, then
every storage back to back). The pickle is read with a restricted unpickler: it resolves
only the handful of globals a state_dict needs (tensor and parameter rebuild functions,
storage and dtype names, `OrderedDict`), so a malicious file cannot run code. Any other
global becomes an inert placeholder, because real checkpoints carry harmless extras next
to the weights (training state, numpy objects); a placeholder inside the weights
themselves is an error.

Callers normally go through `ser_jax.pretrained.load_state_dict(path)`, which picks the
reader by file content (`recognizes`). Only numpy is needed; PyTorch never is.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from ser_jax.errors import CheckpointError

# `torch.save`'s legacy (non-zip) format starts with this number, pickled.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class names (`torch.FloatStorage`, ...) and dtype names (`torch.float32`, ...)
# as they appear in pickles, mapped to numpy dtype names. bfloat16 comes from ml_dtypes
# (a JAX dependency), imported only when a file holds one.
_STORAGE_DTYPES = {
    'FloatStorage': 'float32',
    'DoubleStorage': 'float64',
    'HalfStorage': 'float16',
    'BFloat16Storage': 'bfloat16',
    'LongStorage': 'int64',
    'IntStorage': 'int32',
    'ShortStorage': 'int16',
    'CharStorage': 'int8',
    'ByteStorage': 'uint8',
    'BoolStorage': 'bool',
    'UntypedStorage': 'uint8',
}
_TORCH_DTYPES = {
    'float32': 'float32', 'float': 'float32',
    'float64': 'float64', 'double': 'float64',
    'float16': 'float16', 'half': 'float16',
    'bfloat16': 'bfloat16',
    'int64': 'int64', 'long': 'int64',
    'int32': 'int32', 'int': 'int32',
    'int16': 'int16', 'short': 'int16',
    'int8': 'int8',
    'uint8': 'uint8',
    'bool': 'bool',
}

# Wrapper dicts that hold the state_dict under one key, in the order they are tried:
# PANNs (`{'model': ..., 'iteration': ..., ...}`), Lightning and most training
# scripts (`state_dict`, `model_state_dict`), and a few other common spellings.
_WRAPPER_KEYS = ('model', 'state_dict', 'model_state_dict', 'model_state', 'net', 'weights')

def _np_dtype(name):
  if name == 'bfloat16':
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


class _StorageType:
  """Stands for `torch.<X>Storage` in a pickle: only its dtype matters."""

  def __init__(self, name):
    self.name = name
    self.dtype_name = _STORAGE_DTYPES[name]


class _TorchDtype:
  """Stands for `torch.float32` etc. (the dtype argument of `_rebuild_tensor_v3`)."""

  def __init__(self, name):
    self.dtype_name = _TORCH_DTYPES[name]


class _Storage:
  """A flat storage: `data` is filled in when the bytes are read."""

  def __init__(self, key, dtype_name, numel):
    self.key = key
    self.dtype_name = dtype_name
    self.numel = numel
    self.data = None  # np.ndarray, 1-D, dtype_name
    self.base = None  # legacy views: (_Storage root, offset in elements)

  def array(self):
    if self.base is not None:
      root, offset = self.base
      return root.array()[offset:offset + self.numel]
    return self.data


class _LazyTensor:
  """A tensor whose storage may not be read yet (legacy files put data after the pickle)."""

  def __init__(self, storage, offset, size, stride, dtype_name=None):
    self.storage = storage
    self.offset = int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)
    # `_rebuild_tensor_v3` gives the dtype separately (its storage is untyped bytes).
    self.dtype_name = dtype_name

  def to_numpy(self, name):
    """Copies the (possibly strided, offset) view out of the storage."""
    flat = self.storage.array()
    if flat is None:
      raise CheckpointError(f'tensor {name!r}: its storage {self.storage.key!r} is missing '
                            'from the file (truncated or corrupt checkpoint)')
    if self.dtype_name is not None and self.dtype_name != self.storage.dtype_name:
      flat = flat.view(_np_dtype(self.dtype_name))
    if any(s == 0 for s in self.size):
      return np.zeros(self.size, flat.dtype)
    if any(s < 0 for s in self.stride) or self.offset < 0:
      raise CheckpointError(f'tensor {name!r}: negative stride/offset {self.stride}, '
                            f'{self.offset}: corrupt checkpoint')
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= flat.size:
      raise CheckpointError(
          f'tensor {name!r} of shape {self.size} needs element {last} of its storage, which '
          f'has {flat.size}: truncated or corrupt checkpoint')
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size,
        strides=[s * flat.itemsize for s in self.stride])
    return np.array(view, order='C')  # a contiguous copy, independent of the file buffer


class _Opaque:
  """An inert stand-in for any global the unpickler does not allow.

  It accepts every way pickle builds objects (call, `__new__`, `__setstate__`, item and
  list appends) and does nothing, so no code from the file ever runs. Its class remembers
  the name the pickle asked for, for error messages.
  """
  qualname = '?'

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state

  def __setitem__(self, key, value):
    del key, value

  def append(self, value):
    del value

  def extend(self, values):
    del values


def _opaque_class(module, name):
  return type('Opaque', (_Opaque,), {'qualname': f'{module}.{name}'})


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  if not isinstance(storage, _Storage):
    raise CheckpointError(f'tensor rebuilt from {type(storage).__name__}, not a storage')
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, dtype, *unused):
  del requires_grad, backward_hooks
  tensor = _rebuild_tensor(storage, storage_offset, size, stride)
  if isinstance(dtype, _TorchDtype):
    tensor.dtype_name = dtype.dtype_name
  return tensor


def _rebuild_parameter(data, *unused):
  return data  # A Parameter is its data plus requires_grad, which we don't need.


def _codecs_encode(text, encoding='utf-8'):
  # Protocol-2 pickles spell `bytes` objects as _codecs.encode(str, 'latin1').
  if encoding not in ('latin1', 'latin-1'):
    raise CheckpointError(f'unexpected _codecs.encode encoding {encoding!r} in checkpoint')
  return text.encode('latin1')


_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch', 'Size'): tuple,
    ('_codecs', 'encode'): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED_GLOBALS`, storage/dtype names and inert placeholders."""

  def __init__(self, file, storage_loader):
    super().__init__(file)
    self._storage_loader = storage_loader

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module == 'torch' and name in _TORCH_DTYPES:
      return _TorchDtype(name)
    return _opaque_class(module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] in ('storage', b'storage')):
      raise CheckpointError(f'unknown persistent id {pid!r:.80} in checkpoint pickle')
    return self._storage_loader(pid)


def _storage_dtype(storage_type):
  if isinstance(storage_type, _StorageType):
    return storage_type.dtype_name
  name = getattr(type(storage_type), 'qualname', repr(storage_type))
  raise CheckpointError(f'unsupported storage type {name} (complex or quantized tensors '
                        'are not supported)')


def _as_str(x):
  return x.decode('ascii') if isinstance(x, bytes) else str(x)


def _read_zip(path, zf):
  """Unpickles a zip-format checkpoint; storages are read on first use."""
  names = zf.namelist()
  pkl = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
  if not pkl:
    if any(n.endswith('constants.pkl') for n in names):
      raise CheckpointError(
          f'{path} is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; '
          'save the weights with torch.save(model.state_dict(), path)')
    raise CheckpointError(f'{path} is a zip file but not a torch.save checkpoint '
                          '(no <archive>/data.pkl inside)')
  prefix = pkl[0][:-len('data.pkl')]
  byteorder = 'little'
  if prefix + 'byteorder' in names:
    byteorder = zf.read(prefix + 'byteorder').decode('ascii').strip()
    if byteorder not in ('little', 'big'):
      raise CheckpointError(f'{path}: unknown byteorder record {byteorder!r}')
  storages = {}

  def load_storage(pid):
    _, storage_type, key, _, numel = pid[:5]
    key = _as_str(key)
    if key not in storages:
      dtype_name = _storage_dtype(storage_type)
      storage = _Storage(key, dtype_name, numel)
      record = f'{prefix}data/{key}'
      try:
        raw = zf.read(record)
      except KeyError:
        raise CheckpointError(f'{path}: storage record {record} is missing '
                              '(truncated or corrupt checkpoint)') from None
      dtype = _np_dtype(dtype_name).newbyteorder('<' if byteorder == 'little' else '>')
      if len(raw) % dtype.itemsize:
        raise CheckpointError(f'{path}: storage {record} has {len(raw)} bytes, not a '
                              f'multiple of {dtype.itemsize} ({dtype_name})')
      storage.data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder('='), copy=False)
      storages[key] = storage
    return storages[key]

  data = zf.read(pkl[0])
  return _RestrictedUnpickler(io.BytesIO(data), load_storage).load()


def _read_legacy(path, f):
  """Unpickles a pre-1.6 (non-zip) checkpoint and reads its storages, which follow it."""
  def plain_load():
    return _RestrictedUnpickler(f, _no_storage).load()

  def _no_storage(pid):
    raise CheckpointError(f'{path}: unexpected storage in a header pickle ({pid!r:.60})')

  magic = plain_load()
  if magic != _LEGACY_MAGIC:
    raise CheckpointError(f'{path} is a pickle file but not a torch.save checkpoint '
                          '(no torch magic number)')
  protocol = plain_load()
  if protocol != _LEGACY_PROTOCOL:
    raise CheckpointError(f'{path}: unsupported legacy torch protocol {protocol!r}')
  sys_info = plain_load()
  little = bool(sys_info.get('little_endian', True)) if isinstance(sys_info, dict) else True
  storages = {}
  views = []

  def load_storage(pid):
    _, storage_type, key, _, numel = pid[:5]
    view = pid[5] if len(pid) > 5 else None
    key = _as_str(key)
    if key not in storages:
      storages[key] = _Storage(key, _storage_dtype(storage_type), numel)
    root = storages[key]
    if view is None:
      return root
    view_key, offset, view_numel = view
    view_storage = _Storage(_as_str(view_key), root.dtype_name, view_numel)
    view_storage.base = (root, offset)
    views.append(view_storage)
    return view_storage

  obj = _RestrictedUnpickler(f, load_storage).load()
  keys = plain_load()
  for key in keys:
    key = _as_str(key)
    if key not in storages:
      raise CheckpointError(f'{path}: storage {key!r} listed but never used (corrupt file)')
    storage = storages[key]
    dtype = _np_dtype(storage.dtype_name).newbyteorder('<' if little else '>')
    header = f.read(8)
    if len(header) < 8:
      raise CheckpointError(f'{path} is truncated: storage {key!r} is missing')
    (numel,) = struct.unpack('<q' if little else '>q', header)
    raw = f.read(numel * dtype.itemsize)
    if len(raw) < numel * dtype.itemsize:
      raise CheckpointError(f'{path} is truncated: storage {key!r} has {len(raw)} of '
                            f'{numel * dtype.itemsize} bytes')
    storage.data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder('='), copy=False)
  return obj


def recognizes(head: bytes) -> bool:
  """Whether a file starting with `head` (its first bytes) is in a `torch.save` format."""
  return head.startswith(b'PK\x03\x04') or head[:1] == b'\x80'  # zip; pickle >= 2


def read_torch_file(path):
  """Unpickles a `torch.save` file into plain Python containers of lazy tensors.

  Most users want `load_torch_checkpoint`; this is the step before it, for files that hold
  more than one state_dict. Tensors come back as `_LazyTensor`; `materialize` turns them
  into numpy arrays.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    head = f.read(8)
  if not recognizes(head):
    raise CheckpointError(f'{path} is not a torch.save file (starts {head!r})')
  try:
    if head.startswith(b'PK\x03\x04'):
      try:
        zf = zipfile.ZipFile(path)
      except zipfile.BadZipFile as e:
        raise CheckpointError(f'{path} looks like a zip-format torch checkpoint but cannot '
                              f'be opened ({e}): truncated or corrupt (re-download it)') from None
      with zf:
        return _read_zip(path, zf)
    with open(path, 'rb') as f:  # pickle protocol >= 2: the legacy torch.save format
      return _read_legacy(path, f)
  except CheckpointError:
    raise
  except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, struct.error,
          TypeError, IndexError, AttributeError, KeyError) as e:
    raise CheckpointError(f'{path} is truncated or corrupt: reading it failed with '
                          f'{type(e).__name__}: {e}') from None


def _is_tensor_dict(obj):
  return (isinstance(obj, dict) and obj and
          all(isinstance(v, _LazyTensor) for v in obj.values()))


def _describe(obj):
  if isinstance(obj, _Opaque):
    return f'an object of class {type(obj).qualname}'
  return f'a {type(obj).__name__}'


def find_state_dict(obj, path='checkpoint'):
  """Picks the state_dict out of what `read_torch_file` returned.

  Accepts a bare state_dict, or a wrapper dict holding it under one of `_WRAPPER_KEYS`
  (PANNs: `'model'`). Strips the `module.` prefix that `nn.DataParallel` adds to every key.
  Raises CheckpointError naming what was found instead.
  """
  if isinstance(obj, _Opaque):
    raise CheckpointError(
        f'{path} holds a pickled {type(obj).qualname} object, not a state_dict; save the '
        'weights with torch.save(model.state_dict(), path)')
  if not isinstance(obj, dict):
    raise CheckpointError(f'{path} holds {_describe(obj)}, not a state_dict (a dict of '
                          'tensors)')
  state = obj
  if not any(isinstance(v, _LazyTensor) for v in obj.values()):
    for key in _WRAPPER_KEYS:
      if isinstance(obj.get(key), dict):
        state = obj[key]
        break
    else:
      raise CheckpointError(
          f'{path} holds a dict with keys {sorted(map(str, obj))[:10]} and no state_dict in '
          f'any of {list(_WRAPPER_KEYS)}')
  bad = [(k, v) for k, v in state.items() if not isinstance(v, _LazyTensor)]
  if bad:
    k, v = bad[0]
    raise CheckpointError(
        f'{path}: state_dict entry {k!r} is {_describe(v)}, not a dense tensor '
        f'({len(bad)} such entries); only plain tensors can be imported')
  if not state:
    raise CheckpointError(f'{path} holds an empty state_dict')
  return strip_module_prefix({str(k): v for k, v in state.items()})


def strip_module_prefix(state):
  """Drops the `module.` that `nn.DataParallel` puts before every key (when all have it)."""
  if all(k.startswith('module.') for k in state):
    return {k[len('module.'):]: v for k, v in state.items()}
  return state


def materialize(state, path='checkpoint'):
  """`{name: _LazyTensor}` -> `{name: np.ndarray}` (contiguous copies)."""
  return {k: v.to_numpy(f'{path}:{k}') for k, v in state.items()}


def load_torch_checkpoint(path):
  """Reads a `.pth`/`.pt` file into `{state_dict key: np.ndarray}` without PyTorch.

  Handles the zip and legacy `torch.save` formats, wrapper dicts (`{'model': ...}` as in
  PANNs, `{'state_dict': ...}`) and DataParallel's `module.` prefix. Arrays keep their
  stored dtype (float32, float16, bfloat16 via ml_dtypes, int64, ...).

  Raises:
    CheckpointError: the file is not a checkpoint, is truncated, or holds something other
      than a state_dict of dense tensors; the message names the file and what was found.
  """
  path = os.fspath(path)
  obj = read_torch_file(path)
  return materialize(find_state_dict(obj, path), path)
