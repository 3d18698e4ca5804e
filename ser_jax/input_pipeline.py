"""Input pipeline: a random-access RAVDESS source -> one fold's actors -> fixed-shape batches.

The source is anything with `len()` and `source[i] -> dict` (a `tfds.data_source(...)` over
the `ravdess/<subset>_<frontend>` array_record files, or a plain list of example dicts in
tests) whose examples carry at least `log_mel` `(n_mels, frames)`, `emotion`, `actor`
(and optionally `file_name`).

Why plain numpy plus one prefetch thread, not Grain: the whole speech set (1440 clips,
about 300 MB of float32 log-mels) fits in host memory, so it is read once
(`read_source`) and every fold is a selection of it. In `resize` mode the deterministic
resize is done once at selection time, so building a batch is a gather of 32 cached
images plus the optional augmentation: well under a millisecond-scale cost per step
against a CNN step of hundreds of milliseconds on CPU (see bench/train_throughput.py).
Grain's `MapDataset` would add worker processes (seconds of start-up per fold and epoch
on a 2-core machine) and its own seeding rules, with nothing to gain at this size; the
order here is a pure function of (seed, epoch), which is what resume needs.

Conventions:
- Order: the training order of an epoch is `np.random.default_rng([*seed, epoch])`
  permuting the selection, so a resumed run sees exactly the order an uninterrupted one
  would. Augmentation randomness is drawn per example from (seed, epoch, step, position
  in the global batch), so it does not depend on how the batch is split over hosts.
- Training batches cover every clip once per epoch, like PyTorch's
  `DataLoader(shuffle=True, drop_last=False)` used by the predecessor: the last, partial
  batch is filled with copies of real clips carrying `weight` 0, so the loss (a weighted
  mean over real clips) and its gradient equal the partial batch's, while the shapes stay
  fixed (one compile) and BatchNorm statistics still see real spectrograms. Any batch
  size >= 1 works, also one larger than the selection (the copies then repeat).
- Evaluation batches hold every selected clip exactly once, in order; the last batch is
  padded and `valid` marks the real rows (`index` gives each row's position, -1 for padding).
- Batches are host-local: the global batch is cut into `process_count` consecutive slices
  and this process keeps slice `process_index`; `shard()` then splits it over local devices.

Batch keys (host-local batch B):
  image   float32 (B, mel, time, 1)
  mask    bool    (B, time)   True on real frames (all True in `resize` mode)
  label   int32   (B,)        class id (for mixup: the larger-weight one)
  targets float32 (B, C)      one-hot, or mixup's mixed targets (training only)
  weight  float32 (B,)        1 for real clips, 0 for padding (training)
  valid   bool    (B,)        True for real clips (evaluation)
  index   int32   (B,)        position in the selection, -1 for padding (evaluation)

Resize: the predecessor resized the dB image bilinearly to 128 x 256 with PyTorch
(`F.interpolate(mode='bilinear', align_corners=False)`, no antialiasing: half-pixel
centres, two-tap linear interpolation). `resize_bilinear` reproduces that exactly
(tests compare it with torch). Note `jax.image.resize(..., 'bilinear')` antialiases by
default when downsampling (a wider triangle kernel); with `antialias=False` it agrees with
PyTorch for downsampling (RAVDESS clips are 294-528 frames, always shrunk to 256). An
antialiased resize changes the images by up to ~2 dB (on noise-like input), so it is not used.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import logging
import math
import os
import queue
import threading
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ser_jax import errors

log = logging.getLogger(__name__)

CROP_MODES = ('resize', 'crop_pad')
NORMALIZATIONS = ('none', 'utterance', 'mel')


@dataclasses.dataclass
class Examples:
  """An in-memory selection of clips.

  Attributes:
    images: one float32 `(mel, frames)` array per clip (after `prepare_images` in
      `resize` mode: `(mel, time)` of the configured input shape).
    labels: int32 `(N,)` emotion class ids.
    actors: int32 `(N,)` actor ids.
    file_names: one name per clip ('' when the source has none).
    resized_to: the shape every image was resized to, or None (raw lengths).
  """
  images: list[np.ndarray]
  labels: np.ndarray
  actors: np.ndarray
  file_names: list[str]
  resized_to: tuple[int, int] | None = None
  normalized: str = 'none'

  def __len__(self) -> int:
    return len(self.images)

  def actor_ids(self) -> list[int]:
    """The actors present, sorted (what reports list, not what a fold configured)."""
    return sorted({int(a) for a in self.actors})

  def take(self, indices: Sequence[int]) -> 'Examples':
    return Examples(
        images=[self.images[i] for i in indices],
        labels=self.labels[np.asarray(indices, dtype=np.int64)],
        actors=self.actors[np.asarray(indices, dtype=np.int64)],
        file_names=[self.file_names[i] for i in indices],
        resized_to=self.resized_to, normalized=self.normalized)


def _to_str(x: Any) -> str:
  if isinstance(x, bytes):
    return x.decode('utf-8')
  if isinstance(x, np.ndarray):
    return _to_str(x.item())
  return str(x)


def read_source(source: Any, *, dataset_name: str = 'dataset',
                chunk: int = 256) -> Examples:
  """Reads every example of a random-access source into memory.

  Args:
    source: `len()`-able, indexable by int; `__getitems__` is used when present
      (tfds array_record sources read a chunk per call much faster).
    dataset_name: named in errors.
    chunk: examples per `__getitems__` call.

  Returns:
    All examples, in source order.
  """
  n = len(source)
  if n == 0:
    raise errors.UserError(f'{dataset_name}: the data source holds no examples')
  images, labels, actors, names = [], [], [], []
  getitems = getattr(source, '__getitems__', None)
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    items = getitems(keys) if getitems is not None else [source[i] for i in keys]
    for ex in items:
      try:
        image = np.asarray(ex['log_mel'], dtype=np.float32)
        labels.append(int(ex['emotion']))
        actors.append(int(ex['actor']))
      except KeyError as e:
        raise errors.UserError(f'{dataset_name}: examples need log_mel, emotion and actor; '
                         f'missing {e} (keys: {sorted(ex)})') from e
      if image.ndim != 2:
        raise errors.UserError(f'{dataset_name}: log_mel must be (n_mels, frames), got '
                               f'shape {image.shape}')
      images.append(image)
      names.append(_to_str(ex.get('file_name', '')))
  return Examples(images=images, labels=np.asarray(labels, np.int32),
                  actors=np.asarray(actors, np.int32), file_names=names)


def select_actors(examples: Examples, actors: Iterable[int], *,
                  dataset_name: str = 'dataset') -> Examples:
  """Keeps the clips of `actors`; an empty result is an error naming both sides."""
  wanted = sorted({int(a) for a in actors})
  keep = np.flatnonzero(np.isin(examples.actors, wanted))
  if keep.size == 0:
    raise errors.UserError(
        f'Empty data selection: no clips of actors {wanted} in {dataset_name} '
        f'(it holds actors {examples.actor_ids()}). Check config.folds and config.data.')
  missing = sorted(set(wanted) - {int(a) for a in examples.actors[keep]})
  if missing:
    log.warning('%s holds no clips of actors %s (selected %s)', dataset_name, missing,
                wanted)
  return examples.take(keep.tolist())


@functools.lru_cache(maxsize=1024)
def _linear_taps(n_in: int, n_out: int):
  """PyTorch bilinear (align_corners=False) taps along one axis: (i0, i1, w1), each (n_out,)."""
  scale = n_in / n_out
  src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
  src = np.maximum(src, 0.0)  # PyTorch clamps negative source positions to 0
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w1 = (src - i0).astype(np.float32)
  return i0, i1, w1


def resize_bilinear(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """Resizes `(mel, frames)` to `shape` like torch bilinear, align_corners=False, no antialias.

  Two-tap gathers per axis (no BLAS: ~1 ms per clip, and no thread pool to fight XLA's).
  """
  out = np.asarray(image, dtype=np.float32)
  out_h, out_w = int(shape[0]), int(shape[1])
  if out.shape[1] != out_w:
    i0, i1, w1 = _linear_taps(out.shape[1], out_w)
    out = out[:, i0] * (1.0 - w1) + out[:, i1] * w1  # (mel, time)
  if out.shape[0] != out_h:
    i0, i1, w1 = _linear_taps(out.shape[0], out_h)
    out = out[i0] * (1.0 - w1)[:, None] + out[i1] * w1[:, None]  # (out_mel, time)
  return np.ascontiguousarray(out, dtype=np.float32)


def check_data_config(data_config) -> None:
  """Raises UserError unless the data settings are valid (called by config_lib.validate)."""
  if data_config.crop_mode not in CROP_MODES:
    raise errors.UserError(f'config.data.crop_mode must be one of {CROP_MODES}, got '
                           f'{data_config.crop_mode!r}')
  shape = tuple(data_config.input_shape)
  if len(shape) != 2 or min(shape) < 1:
    raise errors.UserError(f'config.data.input_shape must be (mel, time), got {shape}')
  norm = data_config.get('normalize', 'none')
  if norm not in NORMALIZATIONS:
    raise errors.UserError(f'config.data.normalize must be one of {NORMALIZATIONS}, got '
                           f'{norm!r}')
  for name in ('time_stretch', 'freq_warp'):
    value = float(data_config.get(name, 0.0))
    if not 0.0 <= value < 1.0:
      raise errors.UserError(f'config.data.{name} must be in [0, 1) (the largest relative '
                             f'change), got {value}')
  if data_config.crop_mode == 'resize':
    # The warps act on the full clip before cropping (a resize would undo a tempo change),
    # and a resized clip has input_shape's length.
    for name in ('time_stretch', 'freq_warp', 'eval_frames'):
      if data_config.get(name, 0):
        raise errors.UserError(f"config.data.{name} needs crop_mode 'crop_pad' (got "
                               "'resize')")


def normalize(image: np.ndarray, how: str) -> np.ndarray:
  """Per-utterance normalisation of a `(mel, frames)` log-mel.

  'utterance': zero mean, unit variance over the whole clip; 'mel': the same per mel bin
  over time (cepstral mean/variance normalisation's log-mel form, removing a speaker's or
  channel's fixed spectral tilt); 'none': unchanged.
  """
  if how not in NORMALIZATIONS:
    raise errors.UserError(f'config.data.normalize must be one of {NORMALIZATIONS}, got '
                           f'{how!r}')
  if how == 'none':
    return image
  axis = None if how == 'utterance' else 1
  mean = image.mean(axis=axis, keepdims=True)
  std = image.std(axis=axis, keepdims=True)
  # Bins stuck near the dB floor have almost no variance; a floor of a tenth of the clip's
  # spread keeps their noise from being blown up to unit variance.
  std = np.maximum(std, 0.1 * image.std() + 1e-6)
  return ((image - mean) / std).astype(np.float32)


def prepare_images(examples: Examples, data_config) -> Examples:
  """Normalises every clip once (`normalize`); in `resize` mode resizes it to `input_shape`.

  Checks the mel axis of `crop_pad` clips. Idempotent: an already prepared selection is
  returned as it is.
  """
  shape = tuple(int(s) for s in data_config.input_shape)
  how = data_config.get('normalize', 'none')
  if examples.normalized != how:
    if examples.normalized != 'none' or examples.resized_to is not None:
      raise errors.UserError(f'prepare_images: clips already prepared with normalize='
                             f'{examples.normalized!r}, resized_to={examples.resized_to}; '
                             f'cannot apply normalize={how!r}')
    examples = dataclasses.replace(
        examples, images=[normalize(im, how) for im in examples.images], normalized=how)
  if data_config.crop_mode == 'resize':
    if examples.resized_to == shape:
      return examples
    return dataclasses.replace(
        examples, images=[resize_bilinear(im, shape) for im in examples.images],
        resized_to=shape)
  if data_config.crop_mode != 'crop_pad':
    check_data_config(data_config)  # raises, naming the modes
  bad = {im.shape[0] for im in examples.images} - {shape[0]}
  if bad:
    raise errors.UserError(
        f"crop_mode 'crop_pad' keeps the mel axis: the data has {sorted(bad)} mel bins but "
        f"config.data.input_shape[0] is {shape[0]}")
  return examples


def _rng(*keys: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def _as_seed(seed: int | Sequence[int]) -> tuple[int, ...]:
  return (int(seed),) if np.isscalar(seed) else tuple(int(s) for s in seed)


def epoch_order(num_examples: int, seed: int | Sequence[int], epoch: int) -> np.ndarray:
  """The training order of `epoch`: a pure function of (seed, epoch)."""
  return _rng(*_as_seed(seed), epoch).permutation(num_examples)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Training steps of one epoch (the partial last batch counts: no clip is dropped)."""
  return math.ceil(num_examples / batch_size)


def _host_slice(global_size: int, process_index: int, process_count: int) -> slice:
  if global_size % process_count:
    raise ValueError(f'Global batch size {global_size} is not divisible by the '
                     f'{process_count} processes')
  per = global_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def _crop_or_pad(image: np.ndarray, length: int, start: int | None):
  """Crops (at `start`, or centred when None) or pads `(mel, frames)` to `length` frames."""
  frames = image.shape[1]
  if frames >= length:
    if start is None:
      start = (frames - length) // 2
    return image[:, start:start + length], length
  # Pad with the clip's floor (silence in dB) so padding looks like silence, not 0 dB.
  pad = np.full((image.shape[0], length - frames), image.min(), np.float32)
  return np.concatenate([image, pad], axis=1), frames


def _spec_augment(image: np.ndarray, cfg, rng: np.random.Generator) -> np.ndarray:
  """SpecAugment frequency and time masks, filled with the clip's mean (in place on a copy)."""
  image = image.copy()
  fill = image.mean()
  n_mel, n_time = image.shape
  for _ in range(cfg.num_freq_masks):
    width = int(rng.integers(0, min(cfg.max_freq_width, n_mel) + 1))
    start = int(rng.integers(0, n_mel - width + 1))
    image[start:start + width, :] = fill
  for _ in range(cfg.num_time_masks):
    width = int(rng.integers(0, min(cfg.max_time_width, n_time) + 1))
    start = int(rng.integers(0, n_time - width + 1))
    image[:, start:start + width] = fill
  return image


def time_stretch(image: np.ndarray, rate: float) -> np.ndarray:
  """Resamples the time axis of `(mel, frames)` to round(frames * rate) frames (linear).

  A tempo change of the log-mel (speaking rate), the pitch and spectral envelope unchanged.
  """
  frames = max(1, int(round(image.shape[1] * rate)))
  return resize_bilinear(image, (image.shape[0], frames))


def freq_warp(image: np.ndarray, alpha: float) -> np.ndarray:
  """Stretches the mel axis of `(mel, frames)` by `alpha`, pinned at bin 0 (linear).

  Output bin i reads the input at bin i / alpha (past the top bin: the top bin), so
  alpha > 1 moves spectral peaks up. A vocal-tract-length-style warp (VTLP) done on the
  mel index rather than on Hz: on the mel scale a VTL factor is a shift above ~1 kHz and a
  stretch below it; the stretch of the index is the simple stand-in.
  """
  n_mel = image.shape[0]
  src = np.minimum(np.arange(n_mel, dtype=np.float64) / alpha, n_mel - 1)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, n_mel - 1)
  w1 = (src - i0).astype(np.float32)[:, None]
  return (image[i0] * (1.0 - w1) + image[i1] * w1).astype(np.float32)


def _augment_clip(image: np.ndarray, data_config, rng: np.random.Generator) -> np.ndarray:
  """Training-time warps of the full clip (before cropping): tempo, then mel axis."""
  stretch = float(data_config.get('time_stretch', 0.0))
  if stretch:
    image = time_stretch(image, float(rng.uniform(1.0 - stretch, 1.0 + stretch)))
  warp = float(data_config.get('freq_warp', 0.0))
  if warp:
    image = freq_warp(image, float(rng.uniform(1.0 - warp, 1.0 + warp)))
  return image


def eval_length(data_config) -> int:
  """Frames of an evaluation image: `eval_frames` when set (crop_pad), else input_shape's."""
  return int(data_config.get('eval_frames', 0) or data_config.input_shape[1])


def _make_image(examples: Examples, i: int, data_config, rng, train: bool):
  """One clip as a fixed-shape `(mel, time)` image plus its frame mask `(time,)`."""
  length = int(data_config.input_shape[1]) if train else eval_length(data_config)
  image = examples.images[i]
  if data_config.crop_mode == 'resize':
    if examples.resized_to is None:
      image = resize_bilinear(image, data_config.input_shape)
    real = length
  else:
    if train:
      image = _augment_clip(image, data_config, rng)
    start = None
    if train and image.shape[1] > length:
      start = int(rng.integers(0, image.shape[1] - length + 1))
    image, real = _crop_or_pad(image, length, start)
  if train and data_config.specaugment.enabled:
    image = _spec_augment(image, data_config.specaugment, rng)
  mask = np.arange(length) < real
  return image, mask


def train_batches(examples: Examples, data_config, *, batch_size: int, num_classes: int,
                  seed: int | Sequence[int], epoch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's part of every training batch of `epoch` (see module docstring).

  Args:
    examples: the training selection (ideally after `prepare_images`).
    data_config: `config.data`.
    batch_size: the global batch size.
    num_classes: width of `targets`.
    seed: int or tuple (e.g. (config.seed, fold)); with `epoch` fixes order and augmentation.
    epoch: 0-based epoch.
    start_step: first step of the epoch to produce (resume inside an epoch).
    process_index, process_count: this host and the number of hosts.
  """
  seed = _as_seed(seed)
  n = len(examples)
  if n == 0:
    raise ValueError('train_batches: the training selection is empty')
  order = epoch_order(n, seed, epoch)
  num_steps = steps_per_epoch(n, batch_size)
  host = _host_slice(batch_size, process_index, process_count)
  alpha = float(data_config.mixup_alpha)
  # Per-example generators cost ~20 us each; make them only when something is random.
  random_images = (data_config.crop_mode == 'crop_pad' or data_config.specaugment.enabled
                   or alpha > 0)
  for step in range(start_step, num_steps):
    idx = order[step * batch_size:(step + 1) * batch_size]
    weight = np.ones(batch_size, np.float32)
    if idx.size < batch_size:  # partial last batch: fill with weight-0 copies of real clips
      weight[idx.size:] = 0.0
      # np.resize repeats the order as often as needed: a batch may exceed the clips.
      idx = np.concatenate([idx, np.resize(order, batch_size - idx.size)])
    # Mixup partners and the mixing weight are drawn for the global batch.
    if alpha > 0:
      mix_rng = _rng(*seed, epoch, step, 0x6D6978)
      lam = float(mix_rng.beta(alpha, alpha))
      partner = idx[mix_rng.permutation(batch_size)]
    positions = np.arange(batch_size)[host]
    images, masks = [], []
    for pos in positions:
      rng = _rng(*seed, epoch, step, int(pos)) if random_images else None
      image, mask = _make_image(examples, int(idx[pos]), data_config, rng, train=True)
      if alpha > 0:
        other, other_mask = _make_image(examples, int(partner[pos]), data_config, rng,
                                        train=True)
        image = lam * image + (1.0 - lam) * other
        mask = mask | other_mask
      images.append(image)
      masks.append(mask)
    labels = examples.labels[idx[host]]
    targets = np.eye(num_classes, dtype=np.float32)[labels]  # (B, C)
    if alpha > 0:
      partner_labels = examples.labels[partner[host]]
      targets = lam * targets + (1.0 - lam) * np.eye(num_classes,
                                                      dtype=np.float32)[partner_labels]
      if lam < 0.5:
        labels = partner_labels
    yield {
        'image': np.stack(images)[..., None].astype(np.float32),  # (B, mel, time, 1)
        'mask': np.stack(masks),  # (B, time)
        'label': labels.astype(np.int32),
        'targets': targets,
        'weight': weight[host],
    }


def num_eval_batches(num_examples: int, batch_size: int) -> int:
  return math.ceil(num_examples / batch_size)


def eval_batches(examples: Examples, data_config, *, batch_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's part of evaluation batches covering every clip exactly once."""
  n = len(examples)
  host = _host_slice(batch_size, process_index, process_count)
  for b in range(num_eval_batches(n, batch_size)):
    index = np.arange(b * batch_size, (b + 1) * batch_size)
    index[index >= n] = -1  # padding rows
    rows = index[host]
    images, masks = [], []
    for i in rows:
      image, mask = _make_image(examples, int(max(i, 0)), data_config, None, train=False)
      images.append(image)
      masks.append(mask)
    yield {
        'image': np.stack(images)[..., None].astype(np.float32),  # (B, mel, time, 1)
        'mask': np.stack(masks),  # (B, time)
        'label': np.where(rows >= 0, examples.labels[np.maximum(rows, 0)], 0).astype(
            np.int32),
        'valid': rows >= 0,
        'index': rows.astype(np.int32),
    }


def shard(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  """Splits the leading (host batch) axis into (num_devices, per_device, ...) for pmap."""
  def split(x):
    if x.shape[0] % num_devices:
      raise ValueError(f'Host batch of {x.shape[0]} does not split over {num_devices} '
                       'local devices; make the batch size a multiple of the device count')
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])
  return {k: split(v) for k, v in batch.items()}


_END = object()


def prefetch(iterator: Iterable[Any], size: int = 2) -> Iterator[Any]:
  """Runs `iterator` in a background thread, `size` items ahead; re-raises its errors.

  Numpy releases the GIL in the gathers and arithmetic that build a batch, so the next
  batch is built while the device (XLA's own threads) runs the current step.
  """
  q: queue.Queue = queue.Queue(maxsize=max(1, size))
  stop = threading.Event()

  def producer():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      q.put(_END)
    except BaseException as e:  # pylint: disable=broad-except
      q.put(e)

  thread = threading.Thread(target=producer, daemon=True, name='input_prefetch')
  thread.start()
  try:
    while True:
      item = q.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()


# ---------------------------------------------------------------------------------------
# The TFDS dataset.


def _manual_dir(data_config) -> str | None:
  return data_config.get('manual_dir') or os.environ.get('RAVDESS_DIR') or None


def _tfds_name(data_config) -> str:
  from ser_jax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.tfds_name(data_config)


def prepare_dataset(data_config):
  """Returns the prepared TFDS builder of `config.data`, building it when missing.

  The TFDS name is `config_lib.tfds_name(config.data)` (e.g. 'ravdess/speech' with
  front end 'predecessor48k' -> 'ravdess/speech_predecessor48k'). Building reads RAVDESS
  from `config.data.manual_dir` (or $RAVDESS_DIR) when given, else lets the builder
  download it; only when `config.data.download` is True.
  """
  return prepare_tfds(_tfds_name(data_config), data_config.get('data_dir'),
                  _manual_dir(data_config), bool(data_config.download))


def prepare_tfds(name: str, data_dir: str | None, manual_dir: str | None, download: bool):
  """`prepare_dataset` by TFDS name (e.g. 'ravdess/speech_predecessor48k')."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tfds_ravdess  # pylint: disable=g-import-not-at-top,unused-import  # registers 'ravdess'
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  if not download:
    raise errors.UserError(
        f'TFDS dataset {name} is not prepared in {builder.data_dir} and '
        'config.data.download is False. Build it (python -m tfds_ravdess) or set '
        'config.data.download=True with config.data.manual_dir or $RAVDESS_DIR.')
  log.info('Preparing %s in %s (manual_dir=%s)', name, builder.data_dir, manual_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
      file_format='array_record')
  return builder


@functools.lru_cache(maxsize=2)
def _load_all_cached(name: str, data_dir: str | None, manual_dir: str | None,
                     download: bool) -> Examples:
  source = prepare_tfds(name, data_dir, manual_dir, download).as_data_source(split='train')
  return read_source(source, dataset_name=name)


def load_all(data_config) -> Examples:
  """Every clip of the configured dataset, read once per process and cached."""
  return _load_all_cached(_tfds_name(data_config), data_config.get('data_dir'),
                          _manual_dir(data_config), bool(data_config.download))
