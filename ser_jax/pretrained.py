"""Pretrained weights: read a checkpoint file, convert it, merge it strictly into a model.

1. `load_state_dict(path) -> dict[str, np.ndarray]`: the one entry for weight files; the
   reader is chosen by the file's first bytes, never its name (`ser_jax.torch_file` for
   `torch.save` files, `ser_jax.safetensors_file` for `.safetensors`; a new format adds a
   reader there).
2. `merge_params(loaded, init, dont_load)`: a strict merge (in the spirit of big_vision's)
   of converted variables into freshly initialised ones.
3. `init_from_pretrained(variables, config)`: what training does when
   `config.init.pretrained` is set; `load_pretrained` (a weights file converted on the fly
   with `ser_jax.convert`, or a `launch/import_weights.py` directory) is what evaluation
   with `--weights` uses, and `import_checkpoint` what launch/import_weights.py does.

Every path checks the weights against the front end the model will see
(`config.data.frontend`): a PANNs checkpoint carries its front end's fixed STFT and mel
buffers (`check_panns_frontend`), and an import directory records the front end it was
imported for (`check_imported_frontend`), so e.g. the 16 kHz CNN14 cannot silently be
fine-tuned or evaluated on 32 kHz log-mels.

Only numpy is needed to read a file; JAX, Flax and Orbax are imported lazily by the parts
that need them, and PyTorch never is.
"""
import collections.abc
import json
import logging
import os
import re

import numpy as np

from ser_jax import errors
from ser_jax import safetensors_file
from ser_jax import torch_file

CheckpointError = errors.CheckpointError

# ---------------------------------------------------------------------------------------
# Reading weight files.
# ---------------------------------------------------------------------------------------

WEIGHT_FORMATS = '.pth/.pt written by torch.save, or .safetensors'

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


def load_state_dict(path):
  """Reads a weights file into `{state_dict key: np.ndarray}`, choosing the reader by content.

  Handles what `ser_jax.torch_file.load_torch_checkpoint` handles (zip and legacy
  `torch.save` formats, wrapper dicts such as PANNs' `{'model': ...}`, DataParallel's
  `module.` prefix) and `.safetensors` files (`ser_jax.safetensors_file`), whatever the
  file is called; arrays keep their stored dtype.

  Raises:
    CheckpointError: the file is not a checkpoint, is truncated, or holds something other
      than a state_dict of dense tensors; the message names the file and what was found.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise CheckpointError(f'{path} is a directory, not a weights file ({WEIGHT_FORMATS})')
  with open(path, 'rb') as f:
    head = f.read(safetensors_file.HEAD_BYTES)
  if not head:
    raise CheckpointError(f'{path} is empty, not a checkpoint ({WEIGHT_FORMATS})')
  # safetensors first: its header length may start with the byte a pickle starts with.
  if safetensors_file.recognizes(head, os.path.getsize(path)):
    return safetensors_file.load_safetensors(path)
  if torch_file.recognizes(head):
    return torch_file.load_torch_checkpoint(path)
  for magic, what in _KNOWN_MAGICS:
    if head.startswith(magic):
      raise CheckpointError(f'{path} is {what}, not a checkpoint ({WEIGHT_FORMATS})')
  kind = 'a text file' if _looks_like_text(head) else f'an unknown format (starts {head!r})'
  raise CheckpointError(f'{path} is {kind}, not a checkpoint ({WEIGHT_FORMATS})')


def _looks_like_text(head):
  try:
    head.decode('utf-8')
    return True
  except UnicodeDecodeError:
    return False


# ---------------------------------------------------------------------------------------
# Strict merge into freshly initialised variables.
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
    raise errors.UserError(f'dont_load: invalid regex {e.pattern!r}: {e}') from None


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
# Front-end checks and conversion.
# ---------------------------------------------------------------------------------------

# Fixed front-end buffers of PANNs' torchlibrosa modules: (n_fft // 2 + 1, 1, n_fft) and
# (n_fft // 2 + 1, n_mels). They tell which front end a PANNs checkpoint was trained with.
_PANNS_STFT_KEY = 'spectrogram_extractor.stft.conv_real.weight'
_PANNS_MEL_KEY = 'logmel_extractor.melW'


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
    frontend: a `ser_jax.features` front-end name ('panns32k') or a FrontEnd.

  Raises:
    CheckpointError: naming the checkpoint's front end and the one requested.
  """
  from ser_jax import features  # pylint: disable=g-import-not-at-top
  if isinstance(frontend, str):
    frontend = features.get_frontend(frontend)
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
      f'that matches the front end, or the matching front end'
      f'{f" (--config.data.frontend={theirs[0]})" if theirs else ""}.')


def _unexplained(keys, table):
  """Keys no rule of a `ser_jax.convert` table matches (by module prefix)."""
  return [k for k in keys
          if not any(re.fullmatch(rule.pattern, k.rpartition('.')[0]) for rule in table)]


def matching_sources(keys):
  """Converter sources whose rename table explains every key (a hint for errors)."""
  from ser_jax import convert as convert_lib  # pylint: disable=g-import-not-at-top
  return [name for name, table in convert_lib.SOURCES.items()
          if not _unexplained(keys, table)]


def convert_state_dict(state_dict, source, *, frontend, path='checkpoint'):
  """Converts a torch state_dict with `ser_jax.convert`, checking PANNs' front end.

  `frontend` (a `ser_jax.features` name or FrontEnd) is the one the model will see.

  Raises:
    CheckpointError: the rename table does not fit the keys (the message names the
      sources that would), or a PANNs checkpoint does not match `frontend`.
  """
  from ser_jax import convert as convert_lib  # pylint: disable=g-import-not-at-top
  if not source:
    raise CheckpointError(f'{path}: a weights file needs a converter source '
                          f'(config.init.source / --source), one of '
                          f'{sorted(convert_lib.SOURCES)}')
  if source.startswith('panns'):
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


# ---------------------------------------------------------------------------------------
# From a file to merged variables.
# ---------------------------------------------------------------------------------------


def load_pretrained(path, variables, *, frontend, source='', dont_load=()):
  """Loads `path` (a weights file or an import_weights output) strictly into `variables`.

  Args:
    path: a weights file (`load_state_dict`), or a directory written by
      `launch/import_weights.py`.
    variables: freshly initialised `{'params', 'batch_stats'}` of the target model
      (values, or `jax.ShapeDtypeStruct`s when `dont_load` matches none of them).
    frontend: the front end the model will see (`config.data.frontend`); weights
      trained or imported for another one are refused.
    source: converter name (`ser_jax.convert.SOURCES`) for a file; ignored for a directory.
    dont_load: regexes of variable paths that keep their initial values.

  Returns:
    Merged variables (nested dicts of numpy arrays).

  Raises:
    CheckpointError: missing, unreadable or mismatched weights (names the problem).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    loaded = restore_imported(path, frontend=frontend)
  elif os.path.exists(path):
    state_dict = load_state_dict(path)
    loaded = convert_state_dict(state_dict, source, frontend=frontend, path=path)
  else:
    raise CheckpointError(f'pretrained weights {path} do not exist')
  return merge_params(loaded, variables, dont_load)


def init_from_pretrained(variables, config):
  """What training does when `config.init.pretrained` is set.

  Args:
    variables: freshly initialised `{'params': ..., 'batch_stats': ...}`.
    config: the experiment config: `init.pretrained` (weights file or import_weights
      directory), `init.source` (converter for a file), `init.dont_load` (regexes kept
      from `variables`), and `data.frontend`, which the weights must have been trained
      (PANNs) or imported for.

  Returns:
    Variables of the same structure, as JAX arrays, with the pretrained values.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  init = config.init
  dont_load = tuple(init.get('dont_load', ()))
  merged = load_pretrained(init.pretrained, variables, frontend=config.data.frontend,
                           source=init.get('source', ''), dont_load=dont_load)
  kept = [p for p in flatten(merged) if any(re.search(d, p) for d in dont_load)]
  logging.info('Initialised from %s: %d leaves loaded, %d kept from init (%s)',
               init.pretrained, len(flatten(merged)) - len(kept), len(kept), kept)
  return jax.tree.map(jnp.asarray, merged)


def import_checkpoint(config, path, *, seed=0):
  """A weights file -> converted -> strictly merged into a fresh `config.model`.

  The model, classes, input shape and front end come from `config`, the converter and
  the new parts from `config.init.source` / `config.init.dont_load`. Leaves matched by
  `dont_load` keep their fresh initialisation (from `seed`); without `dont_load` the
  model is only traced for its shapes, never run.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import model_init  # pylint: disable=g-import-not-at-top
  dont_load = tuple(config.init.dont_load)
  init = model_init.init_variables(config, rng=jax.random.PRNGKey(seed),
                                   abstract=not dont_load)
  return load_pretrained(path, init, frontend=config.data.frontend,
                         source=config.init.source, dont_load=dont_load)


# ---------------------------------------------------------------------------------------
# Imported checkpoints (written by launch/import_weights.py).
# ---------------------------------------------------------------------------------------

IMPORT_INFO = 'import_info.json'  # what was imported, next to the Orbax checkpoint
IMPORT_VARIABLES = 'variables'  # the Orbax StandardCheckpointer directory


def save_imported(output, variables, info, extra_files=None):
  """Writes `output/variables` (Orbax), `output/import_info.json` and copies of
  `extra_files` ({name in output: source path}), atomically.

  Everything is written into a temporary sibling directory first and renamed into place
  at the end, so an interrupted import leaves no half-written `output`.

  Raises:
    FileExistsError: `output` exists (never overwritten).
  """
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from ser_jax import checkpoints  # pylint: disable=g-import-not-at-top
  output = os.path.abspath(os.fspath(output))
  if os.path.exists(output):
    raise FileExistsError(f'{output} exists; refusing to overwrite it (choose another '
                          '--output or delete it)')
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(output)}.tmp-', dir=parent)
  try:
    numpy_vars = unflatten({k: np.asarray(v) for k, v in flatten(variables).items()})
    checkpoints.save_variables(os.path.join(tmp, IMPORT_VARIABLES), numpy_vars)
    with open(os.path.join(tmp, IMPORT_INFO), 'w') as f:
      json.dump(info, f, indent=2, sort_keys=True)
    for name, source in (extra_files or {}).items():
      shutil.copyfile(source, os.path.join(tmp, name))
    if os.path.exists(output):
      raise FileExistsError(f'{output} appeared while importing; not overwriting it')
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return output


def read_import_info(path):
  """`import_info.json` of an import directory ({} when there is none)."""
  info_path = os.path.join(os.fspath(path), IMPORT_INFO)
  if not os.path.exists(info_path):
    return {}
  with open(info_path) as f:
    return json.load(f)


def check_weights_frontend(path, source, frontend):
  """Raises CheckpointError when weights at `path` are not for `frontend`.

  An import directory is checked against the front end it records; a PANNs file
  (`source` 'panns_*') against its STFT and mel buffers (this reads the file). Other
  files carry no front end and pass.
  """
  if os.path.isdir(path):
    check_imported_frontend(path, frontend)
  elif str(source).startswith('panns'):
    check_panns_frontend(load_state_dict(path), frontend, path)


def check_imported_frontend(path, frontend):
  """Raises CheckpointError when `path` records a front end other than `frontend`."""
  imported_fe = read_import_info(path).get('frontend')
  if frontend and imported_fe and imported_fe != frontend:
    raise CheckpointError(f'{path} was imported for front end {imported_fe!r} but the '
                          f'features are {frontend!r} (config.data.frontend)')


def restore_imported(path, *, frontend):
  """Reads the variables of an import_weights directory (or a bare Orbax checkpoint).

  Raises:
    CheckpointError: not a checkpoint directory, or imported for another front end.
  """
  from ser_jax import checkpoints  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.fspath(path))
  ckpt = os.path.join(path, IMPORT_VARIABLES)
  if not os.path.isdir(ckpt):
    ckpt = path  # a bare StandardCheckpointer directory
  if not checkpoints.is_checkpoint(ckpt):
    raise CheckpointError(f'{path} is not a checkpoint written by launch/import_weights.py '
                          f'(no {IMPORT_VARIABLES}/ Orbax checkpoint inside)')
  check_imported_frontend(path, frontend)
  restored = checkpoints.restore_variables(ckpt)
  return unflatten({k: np.asarray(v) for k, v in flatten(restored).items()})


def import_to_directory(config, checkpoint, output, *, seed=0, labels_file=None) -> dict:
  """What launch/import_weights.py does: `import_checkpoint`, then `save_imported`.

  `labels_file`, an AudioSet-style class list (`ser_jax.audioset`) with one label per model
  output, is checked and copied into `output` as `class_labels_indices.csv`, where tagging
  (launch/tag.py) finds it.

  Returns:
    The `import_info.json` written next to the variables (what was imported, from where,
    which variables are fresh).

  Raises:
    UserError: `output` exists, the labels do not fit (both checked before the import), or
      the weights do not fit.
  """
  import datetime  # pylint: disable=g-import-not-at-top
  import hashlib  # pylint: disable=g-import-not-at-top
  from ser_jax import audioset  # pylint: disable=g-import-not-at-top
  output = os.path.abspath(os.fspath(output))
  if os.path.exists(output):  # checked first, so a long import is not wasted
    raise errors.UserError(f'{output} exists; refusing to overwrite it')
  extra_files = {}
  if labels_file:
    try:
      num_labels = len(audioset.read_labels(labels_file))
    except (ValueError, OSError) as e:
      raise errors.UserError(f'--labels: {e}') from None
    if num_labels != config.model.num_classes:
      raise errors.UserError(f'--labels={labels_file} lists {num_labels} labels, but the '
                             f'model has {config.model.num_classes} outputs (--num_classes)')
    extra_files[audioset.LABELS_FILE] = labels_file
  variables = import_checkpoint(config, checkpoint, seed=seed)
  flat = flatten(variables)
  dont_load = [p for p in config.init.dont_load if p]
  digest = hashlib.sha256()
  with open(checkpoint, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  info = {'model': config.model.name, 'source': config.init.source,
          'num_classes': int(config.model.num_classes), 'dont_load': dont_load,
          'frontend': config.data.frontend,
          'input_shape': [int(s) for s in config.data.input_shape],
          'checkpoint': os.path.abspath(checkpoint), 'checkpoint_sha256': digest.hexdigest(),
          'seed': seed, 'fresh': sorted(p for p in flat
                                        if any(re.search(d, p) for d in dont_load)),
          'num_parameters': int(sum(v.size for p, v in flat.items()
                                    if p.startswith('params/'))),
          'num_variables': len(flat),
          'created': datetime.datetime.now(datetime.timezone.utc).isoformat()}
  if labels_file:
    info['labels_file'] = os.path.abspath(labels_file)
  try:
    save_imported(output, variables, info, extra_files)
  except FileExistsError as e:
    raise errors.UserError(str(e)) from None
  return info
