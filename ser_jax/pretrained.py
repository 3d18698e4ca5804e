"""PyTorch checkpoints without PyTorch: reading, strict merging, initialising from them.

Three layers, each usable on its own:

1. `load_torch_checkpoint(path) -> dict[str, np.ndarray]` reads a `.pth`/`.pt` file written
   by `torch.save`: the zip format (PyTorch >= 1.6: `<archive>/data.pkl` plus one raw
   storage per tensor under `<archive>/data/<key>`) and the older non-zip format (magic
   number, three small pickles, the object pickle, then every storage back to back). The
   pickle is read with a restricted unpickler: it resolves only the handful of globals a
   state_dict needs (tensor and parameter rebuild functions, storage and dtype names,
   `OrderedDict`), so a malicious file cannot run code. Any other global becomes an inert
   placeholder, because real checkpoints carry harmless extras next to the weights
   (training state, numpy objects); a placeholder inside the weights themselves is an
   error.
2. `merge_params(loaded, init, dont_load)`: a strict merge (in the spirit of big_vision's)
   of converted variables into freshly initialised ones.
3. `init_from_pretrained(variables, init_config)`: what training calls when
   `config.init.pretrained` is set; accepts a `.pth`/`.pt` file (converted on the fly with
   `ser_jax.convert`) or a checkpoint written by `launch/import_weights.py`.
   `import_checkpoint` (file -> merged variables of a named model) and `save_imported` /
   `restore_imported` (the `variables/` + `import_info.json` directory) serve
   launch/import_weights.py and launch/evaluate.py.

A PANNs checkpoint also carries its front end's fixed STFT and mel buffers; they are
compared with the features the model will see (`check_panns_frontend`), so the 16 kHz
CNN14 cannot silently be fine-tuned on 32 kHz log-mels or the other way round.

Only numpy is needed to read a file; JAX, Flax and Orbax are imported lazily by the parts
that need them, and PyTorch never is.
"""
import collections
import collections.abc
import io
import logging
import os
import pickle
import re
import struct
import zipfile

import numpy as np


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, or does not fit the model it is meant for."""


# ---------------------------------------------------------------------------------------
# Part 1: reading torch.save files.
# ---------------------------------------------------------------------------------------

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

# The first bytes of files people mistake for checkpoints, for a helpful error.
_KNOWN_MAGICS = (
    (b'RIFF', 'a RIFF/WAV audio file'),
    (b'fLaC', 'a FLAC audio file'),
    (b'ID3', 'an MP3 audio file'),
    (b'OggS', 'an Ogg audio file'),
    (b'\x89HDF', 'an HDF5 file (Keras weights?)'),
    (b'\x93NUMPY', 'a numpy .npy file'),
    (b'\x1f\x8b', 'a gzip file (unpack it first)'),
    (b'<', 'an HTML/XML page (a failed download?)'),
)


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


def read_torch_file(path):
  """Unpickles a `torch.save` file into plain Python containers of lazy tensors.

  Most users want `load_torch_checkpoint`; this is the step before it, for files that hold
  more than one state_dict. Tensors come back as `_LazyTensor`; `materialize` turns them
  into numpy arrays.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise CheckpointError(f'{path} is a directory, not a .pth/.pt file')
  with open(path, 'rb') as f:
    head = f.read(8)
  if not head:
    raise CheckpointError(f'{path} is empty, not a PyTorch checkpoint')
  try:
    if head.startswith(b'PK\x03\x04'):
      try:
        zf = zipfile.ZipFile(path)
      except zipfile.BadZipFile as e:
        raise CheckpointError(f'{path} looks like a zip-format torch checkpoint but cannot '
                              f'be opened ({e}): truncated or corrupt (re-download it)') from None
      with zf:
        return _read_zip(path, zf)
    if head[:1] == b'\x80':  # pickle protocol >= 2: the legacy torch.save format
      with open(path, 'rb') as f:
        return _read_legacy(path, f)
  except CheckpointError:
    raise
  except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, struct.error,
          TypeError, IndexError, AttributeError, KeyError) as e:
    raise CheckpointError(f'{path} is truncated or corrupt: reading it failed with '
                          f'{type(e).__name__}: {e}') from None
  for magic, what in _KNOWN_MAGICS:
    if head.startswith(magic):
      raise CheckpointError(f'{path} is {what}, not a PyTorch checkpoint (.pth/.pt)')
  kind = 'a text file' if _looks_like_text(head) else f'an unknown format (starts {head!r})'
  raise CheckpointError(f'{path} is {kind}, not a PyTorch checkpoint (.pth/.pt written by '
                        'torch.save)')


def _looks_like_text(head):
  try:
    head.decode('utf-8')
    return True
  except UnicodeDecodeError:
    return False


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
  keys = [str(k) for k in state]
  if all(k.startswith('module.') for k in keys):
    state = {k[len('module.'):]: v for k, v in zip(keys, state.values())}
  return {str(k): v for k, v in state.items()}


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


# ---------------------------------------------------------------------------------------
# Part 2: strict merge into freshly initialised variables.
# ---------------------------------------------------------------------------------------

# How many names each section of a merge error lists.
MAX_LISTED = 10


def flatten(tree, prefix=''):
  """Nested mappings -> `{'params/conv1/kernel': leaf}`, in the tree's own order."""
  flat = {}
  for key, value in tree.items():
    path = f'{prefix}/{key}' if prefix else str(key)
    if isinstance(value, collections.abc.Mapping):
      flat.update(flatten(value, path))
    else:
      flat[path] = value
  return flat


def unflatten(flat):
  """`{'a/b/c': leaf}` -> nested plain dicts."""
  tree = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def _compile(dont_load):
  if isinstance(dont_load, str):
    dont_load = (dont_load,) if dont_load else ()
  try:
    return [(p, re.compile(p)) for p in dont_load]
  except re.error as e:
    raise ValueError(f'dont_load: invalid regex {e.pattern!r}: {e}') from None


def _shape(x):
  shape = getattr(x, 'shape', None)  # arrays and jax.ShapeDtypeStruct
  return tuple(np.shape(x) if shape is None else shape)


def merge_params(loaded, init, dont_load=()):
  """Strictly merges `loaded` variables into freshly initialised `init` (big_vision style).

  Every leaf of `init` must come from `loaded` with the same shape, and every leaf of
  `loaded` must land in `init`, except paths matched by a `dont_load` regex: those keep
  their initial value (a new head, a new 1 -> 3 stem) and are never loaded even when the
  checkpoint has them. Paths are '/'-joined, starting with the collection, e.g.
  'params/fc_audioset/kernel'; patterns use `re.search`, so `'fc_audioset'` matches its
  kernel and bias.

  Args:
    loaded: nested mapping, e.g. `{'params': ..., 'batch_stats': ...}` from `convert`.
    init: nested mapping from `model.init` (leaves: arrays, or `jax.ShapeDtypeStruct`s from
      `jax.eval_shape` when `dont_load` matches none of them).
    dont_load: regexes of paths meant to differ.

  Returns:
    A nested dict shaped like `init`: loaded leaves cast to the initial leaf's dtype
    (numpy), `dont_load` leaves as initialised.

  Raises:
    CheckpointError: one error listing (first `MAX_LISTED` of each) the shape
      mismatches, the model's leaves missing from the checkpoint, and the checkpoint's
      leaves the model does not have, with their shapes.
  """
  patterns = _compile(dont_load)
  # 'params' first: errors then list weights before BatchNorm statistics.
  params_first = lambda tree: {k: tree[k] for k in sorted(tree, key=lambda k: k != 'params')}
  flat_loaded, flat_init = flatten(params_first(loaded)), flatten(params_first(init))
  used = set()

  def skip(path):
    hits = [p for p, rx in patterns if rx.search(path)]
    used.update(hits)
    return bool(hits)

  mismatched, missing, merged = [], [], {}
  for path, init_leaf in flat_init.items():
    if skip(path):
      merged[path] = init_leaf
    elif path not in flat_loaded:
      missing.append(f'{path}: {_shape(init_leaf)}')
    elif _shape(flat_loaded[path]) != _shape(init_leaf):
      mismatched.append(f'{path}: checkpoint {_shape(flat_loaded[path])}, model '
                        f'{_shape(init_leaf)}')
    else:
      dtype = getattr(init_leaf, 'dtype', None)
      dtype = np.asarray(init_leaf).dtype if dtype is None else dtype
      merged[path] = np.asarray(flat_loaded[path]).astype(dtype, copy=False)
  unexpected = [f'{path}: {_shape(leaf)}' for path, leaf in flat_loaded.items()
                if path not in flat_init and not skip(path)]

  if mismatched or missing or unexpected:
    lines = [f'the checkpoint does not fit the model: {len(mismatched)} shape mismatches, '
             f'{len(missing)} model leaves missing from the checkpoint, {len(unexpected)} '
             f'checkpoint leaves the model does not have '
             f'(dont_load={[p for p, _ in patterns]})']
    for title, items in (('shape mismatches', mismatched),
                         ('in the model, not in the checkpoint', missing),
                         ('in the checkpoint, not in the model', unexpected)):
      if items:
        lines.append(f'  {title} (first {min(len(items), MAX_LISTED)} of {len(items)}):')
        lines.extend(f'    {item}' for item in items[:MAX_LISTED])
    lines.append('Is it a checkpoint of this architecture (and number of classes)? Leaves meant '
                 'to differ (a new head, a new stem) go in dont_load (config.init.dont_load or '
                 '--dont_load), e.g. "classifier".')
    raise CheckpointError('\n'.join(lines))
  unused = [p for p, _ in patterns if p not in used]
  if unused:
    logging.warning('merge_params: dont_load patterns %s matched no parameter', unused)
  return unflatten(merged)


# ---------------------------------------------------------------------------------------
# Part 3: from a file to merged variables.
# ---------------------------------------------------------------------------------------

# Fixed front-end buffers of PANNs' torchlibrosa modules: (n_fft // 2 + 1, 1, n_fft) and
# (n_fft // 2 + 1, n_mels). They tell which front end a PANNs checkpoint was trained with.
_PANNS_STFT_KEY = 'spectrogram_extractor.stft.conv_real.weight'
_PANNS_MEL_KEY = 'logmel_extractor.melW'


def frontend_name(name):
  """'panns32k', or a data name like 'ravdess/speech_panns32k' -> 'panns32k'; else None."""
  from ser_jax import features  # pylint: disable=g-import-not-at-top
  if not name:
    return None
  if name in features.FRONTENDS:
    return name
  tail = str(name).rsplit('/', 1)[-1].rsplit('_', 1)[-1]
  return tail if tail in features.FRONTENDS else None


def _mel_matrix(frontend):
  import librosa  # pylint: disable=g-import-not-at-top
  return librosa.filters.mel(sr=frontend.sample_rate, n_fft=frontend.n_fft,
                             n_mels=frontend.n_mels, fmin=frontend.fmin,
                             fmax=frontend.fmax).T  # (n_fft // 2 + 1, n_mels)


def _mel_matches(melw, frontend):
  if melw.shape != (frontend.n_fft // 2 + 1, frontend.n_mels):
    return False
  return np.allclose(np.asarray(melw, np.float32), _mel_matrix(frontend), rtol=1e-4, atol=1e-6)


def check_panns_frontend(state_dict, frontend, path='checkpoint'):
  """Raises unless a PANNs state_dict was trained with `frontend`'s log-mel features.

  PANNs checkpoints carry their front end's fixed buffers: the STFT kernel
  (n_fft // 2 + 1, 1, n_fft) and the mel matrix (n_fft // 2 + 1, n_mels). The 32 kHz
  CNN14 has n_fft 1024 and the 16 kHz one 512, so their shapes tell the files apart; the
  mel matrix is also compared with the one `frontend` computes (sample rate, fmin, fmax).
  A state_dict without these buffers cannot be checked (logged).

  Args:
    state_dict: the torch state_dict (numpy arrays).
    frontend: a `ser_jax.features` front-end name ('panns32k'), a data name
      ('ravdess/speech_panns32k') or a FrontEnd.

  Raises:
    CheckpointError: naming the checkpoint's front end and the one requested.
  """
  from ser_jax import features  # pylint: disable=g-import-not-at-top
  if isinstance(frontend, str):
    frontend = features.get_frontend(frontend_name(frontend) or frontend)
  stft, melw = state_dict.get(_PANNS_STFT_KEY), state_dict.get(_PANNS_MEL_KEY)
  if stft is None and melw is None:
    logging.warning('%s has no PANNs front-end buffers (%s, %s): cannot check that it was '
                    'trained with front end %r', path, _PANNS_STFT_KEY, _PANNS_MEL_KEY,
                    frontend.name)
    return
  n_fft = stft.shape[-1] if stft is not None else 2 * (melw.shape[0] - 1)
  n_mels = melw.shape[1] if melw is not None and melw.ndim == 2 else None
  ok = n_fft == frontend.n_fft and n_mels in (None, frontend.n_mels)
  if ok and melw is not None:
    ok = _mel_matches(melw, frontend)
  if ok:
    return
  theirs = [f.name for f in features.FRONTENDS.values()
            if f.n_fft == n_fft and (melw is None or _mel_matches(melw, f))]
  theirs_text = (f'front end {theirs[0]!r}' if theirs else
                 'a front end ser_jax does not have')
  raise CheckpointError(
      f'{path} is a PANNs checkpoint trained on log-mels with n_fft {n_fft}'
      f'{f", {n_mels} mels" if n_mels else ""} ({theirs_text}; e.g. the 16 kHz CNN14 '
      f'Cnn14_16k_mAP=0.438.pth has n_fft 512, the 32 kHz Cnn14_mAP=0.431.pth 1024), but the '
      f'features are {frontend.name!r} ({frontend.sample_rate} Hz, n_fft {frontend.n_fft}, '
      f'{frontend.n_mels} mels, {frontend.fmin:g}-{frontend.fmax:g} Hz). Use the checkpoint '
      f'that matches the front end, or a data config with the matching front end'
      f'{f" (ravdess/<subset>_{theirs[0]}, --frontend={theirs[0]})" if theirs else ""}.')


def _unexplained(keys, table):
  """Keys no rule of a `ser_jax.convert` table matches (by module prefix)."""
  return [k for k in keys
          if not any(re.fullmatch(rule.pattern, k.rpartition('.')[0]) for rule in table)]


def matching_sources(keys):
  """Converter sources whose rename table explains every key (a hint for errors)."""
  from ser_jax import convert as convert_lib  # pylint: disable=g-import-not-at-top
  return [name for name, table in convert_lib.SOURCES.items()
          if not _unexplained(keys, table)]


def convert(state_dict, source):
  """`ser_jax.convert.convert`, re-exported here where docs/architecture.md lists it."""
  from ser_jax import convert as convert_lib  # pylint: disable=g-import-not-at-top
  return convert_lib.convert(state_dict, source)


def convert_state_dict(state_dict, source, *, frontend=None, path='checkpoint'):
  """Converts a torch state_dict with `ser_jax.convert`, checking PANNs' front end.

  Raises:
    CheckpointError: the rename table does not fit the keys (the message names the
      sources that would), or a PANNs checkpoint does not match `frontend`.
  """
  from ser_jax import convert as convert_lib  # pylint: disable=g-import-not-at-top
  if not source:
    raise CheckpointError(f'{path}: a .pth/.pt checkpoint needs a converter source '
                          f'(config.init.source / --source), one of '
                          f'{sorted(convert_lib.SOURCES)}')
  if source.startswith('panns'):
    if frontend is None:
      logging.warning('%s: no front end given: not checking that the PANNs checkpoint '
                      'matches the features', path)
    else:
      check_panns_frontend(state_dict, frontend, path)
  try:
    return convert_lib.convert(state_dict, source)
  except ValueError as e:
    keys = list(state_dict)
    unexplained = _unexplained(keys, convert_lib.SOURCES.get(source, []))
    if source in convert_lib.SOURCES and unexplained:
      # The converter lists every such key; a whole other architecture is hundreds.
      reason = (f'{len(unexplained)} of its {len(keys)} keys match no rule of that table '
                f'(first {min(len(unexplained), MAX_LISTED)}: '
                f'{unexplained[:MAX_LISTED]})')
    else:
      reason = str(e)
    fits = [s for s in matching_sources(keys) if s != source]
    hint = (f' Its keys fit source(s) {fits}.' if fits else
            f' Its keys fit no known source; first keys: {keys[:MAX_LISTED]}.')
    raise CheckpointError(f'{path} cannot be converted as {source!r}: {reason}.{hint}'
                          ) from None


def init_input_shape(model_name):
  """(mel, time) used to initialise a model for importing: PANNs CNN14 has 64 mel bins."""
  return (64, 128) if 'panns' in model_name else (128, 256)


def init_model(model_name, *, num_classes, seed=0, input_shape=None, abstract=False,
               **model_kwargs):
  """Builds `model_name` and returns (model, freshly initialised variables).

  With `abstract=True` the variables are `jax.ShapeDtypeStruct`s (no compilation, no
  memory): enough for a merge in which every leaf comes from the checkpoint.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  model = models.get_model(model_name, num_classes=num_classes, **model_kwargs)
  mel, time = input_shape or init_input_shape(model_name)
  x = jnp.zeros((1, mel, time, 1), jnp.float32)  # (batch, mel, time, channels)
  init = lambda rng: model.init(rng, x, train=False)
  rng = jax.random.PRNGKey(seed)
  variables = jax.eval_shape(init, rng) if abstract else jax.jit(init)(rng)
  return model, dict(variables)


def load_pretrained(path, variables, *, source='', dont_load=(), frontend=None):
  """Loads `path` (a .pth/.pt or an import_weights output) strictly into `variables`.

  Args:
    path: a `torch.save` file, or a directory written by `launch/import_weights.py`.
    variables: freshly initialised `{'params', 'batch_stats'}` of the target model.
    source: converter name (`ser_jax.convert.SOURCES`) for a .pth; ignored for a directory.
    dont_load: regexes of variable paths that keep their initial values.
    frontend: the front end (name or data name) the model will see; a PANNs checkpoint
      trained with another front end is refused.

  Returns:
    Merged variables (nested dicts of numpy arrays).
  """
  path = os.fspath(path)
  frontend = frontend_name(frontend) if isinstance(frontend, str) else frontend
  if os.path.isdir(path):
    loaded = restore_imported(path, frontend=frontend)
  elif os.path.exists(path):
    state_dict = load_torch_checkpoint(path)
    loaded = convert_state_dict(state_dict, source, frontend=frontend, path=path)
  else:
    raise CheckpointError(f'pretrained weights {path} do not exist')
  return merge_params(loaded, variables, dont_load)


def init_from_pretrained(variables, init_config, *, frontend=None):
  """What training calls when `config.init.pretrained` is set.

  Args:
    variables: freshly initialised `{'params': ..., 'batch_stats': ...}`.
    init_config: `config.init`: `pretrained` (.pth/.pt file or import_weights directory),
      `source` (converter for a .pth), `dont_load` (regexes kept from `variables`).
    frontend: the data's front end, e.g. `config.data.name` ('ravdess/speech_panns32k')
      or 'panns32k'; used to refuse a PANNs checkpoint of another sample rate.

  Returns:
    Variables of the same structure, as JAX arrays, with the pretrained values.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  merged = load_pretrained(init_config.pretrained, variables,
                           source=init_config.get('source', ''),
                           dont_load=tuple(init_config.get('dont_load', ())),
                           frontend=frontend)
  kept = [p for p in flatten(merged)
          if any(re.search(d, p) for d in init_config.get('dont_load', ()))]
  logging.info('Initialised from %s: %d leaves loaded, %d kept from init (%s)',
               init_config.pretrained, len(flatten(merged)) - len(kept), len(kept), kept)
  return jax.tree.map(jnp.asarray, merged)


# ---------------------------------------------------------------------------------------
# Imported checkpoints (written by launch/import_weights.py).
# ---------------------------------------------------------------------------------------

IMPORT_INFO = 'import_info.json'  # what was imported, next to the Orbax checkpoint
IMPORT_VARIABLES = 'variables'  # the Orbax StandardCheckpointer directory


def save_imported(output, variables, info):
  """Writes `output/variables` (Orbax) and `output/import_info.json`, atomically.

  Everything is written into a temporary sibling directory first and renamed into place
  at the end, so an interrupted import leaves no half-written `output`.

  Raises:
    FileExistsError: `output` exists (never overwritten).
  """
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  output = os.path.abspath(os.fspath(output))
  if os.path.exists(output):
    raise FileExistsError(f'{output} exists; refusing to overwrite it (choose another '
                          '--output or delete it)')
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(output)}.tmp-', dir=parent)
  try:
    numpy_vars = unflatten({k: np.asarray(v) for k, v in flatten(variables).items()})
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, IMPORT_VARIABLES), numpy_vars)
    checkpointer.wait_until_finished()
    with open(os.path.join(tmp, IMPORT_INFO), 'w') as f:
      json.dump(info, f, indent=2, sort_keys=True)
    if os.path.exists(output):
      raise FileExistsError(f'{output} appeared while importing; not overwriting it')
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return output


def read_import_info(path):
  import json  # pylint: disable=g-import-not-at-top
  info_path = os.path.join(os.fspath(path), IMPORT_INFO)
  if not os.path.exists(info_path):
    return {}
  with open(info_path) as f:
    return json.load(f)


def restore_imported(path, *, frontend=None):
  """Reads the variables of an import_weights directory (or a bare Orbax checkpoint).

  Raises:
    CheckpointError: not a checkpoint directory, or imported for another front end.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.fspath(path))
  info = read_import_info(path)
  ckpt = os.path.join(path, IMPORT_VARIABLES)
  if not os.path.isdir(ckpt):
    ckpt = path  # a bare StandardCheckpointer directory
  if not os.path.exists(os.path.join(ckpt, '_CHECKPOINT_METADATA')):
    raise CheckpointError(f'{path} is not a checkpoint written by launch/import_weights.py '
                          f'(no {IMPORT_VARIABLES}/ Orbax checkpoint inside)')
  imported_fe = info.get('frontend')
  if frontend and imported_fe and frontend_name(frontend) != imported_fe:
    raise CheckpointError(f'{path} was imported for front end {imported_fe!r} but the '
                          f'features are {frontend_name(frontend)!r}')
  restored = ocp.StandardCheckpointer().restore(ckpt)
  return unflatten({k: np.asarray(v) for k, v in flatten(restored).items()})


def import_checkpoint(path, source, model_name, *, num_classes, dont_load=(), frontend=None,
                      input_shape=None, seed=0, model_kwargs=None):
  """A `.pth` -> converted -> strictly merged into a fresh `model_name`; returns variables.

  Leaves matched by `dont_load` keep their fresh initialisation (from `seed`); without
  `dont_load` the model is only traced for its shapes, never run.
  """
  _, init = init_model(model_name, num_classes=num_classes, seed=seed,
                       input_shape=input_shape, abstract=not dont_load,
                       **(model_kwargs or {}))
  return load_pretrained(path, init, source=source, dont_load=dont_load, frontend=frontend)
