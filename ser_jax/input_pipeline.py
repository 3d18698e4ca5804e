"""Input pipeline: random-access corpus sources -> one fold's speakers -> fixed-shape batches.

A source is anything with `len()` and `source[i] -> dict` (a `tfds.data_source(...)` over
the array_record files of any builder with the shared schema, e.g.
`ravdess/<subset>_<frontend>` or `ser_tess/<frontend>`, or a plain list of example dicts in
tests) whose examples carry at least `log_mel` `(n_mels, frames)`, `emotion`, and
`speaker` (e.g. 'savee:DC') or a RAVDESS `actor` (optionally `file_name`).

Speakers: clips are selected by their `speaker` string. A RAVDESS fold names actors as
ints (`ser_jax.splits`), which stand for 'ravdess:NN' (`speaker_key`), so the RAVDESS
protocol is unchanged; folds of other corpora name speaker strings
(`config_lib.get_folds(config, fold_speakers(config.data, examples))`).

Several datasets (multi-corpus training, `config.data.extra_train`): `load_all` reads
`config.data.name` and each extra dataset and concatenates them; `Examples.groups` says
which dataset each clip came from (0: `config.data.name`). `fold_split` keeps the
speaker-independent test set on dataset 0 and trains on its training speakers plus every
clip of the other datasets whose speaker is not a test speaker. With
`config.data.sampling_weights` an epoch still has as many clips as the training selection,
but dataset g contributes a share weight_g / sum(weights) of them (`epoch_order`): its
clips are drawn without replacement, in a fresh order per pass, repeated when its share
is larger than it is (an up-weighted small corpus) and a different subset each epoch when
smaller. Without weights every training clip is seen once per epoch.

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
  targets float32 (B, C)      one-hot or distillation's soft rows, mixed by mixup (training)
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
from ser_jax import labels as labels_lib

log = logging.getLogger(__name__)

CROP_MODES = ('resize', 'crop_pad')
NORMALIZATIONS = ('none', 'utterance', 'mel')


@dataclasses.dataclass
class Examples:
  """An in-memory selection of clips.

  Attributes:
    images: one float32 `(mel, frames)` array per clip (after `prepare_images` in
      `resize` mode: `(mel, time)` of the configured input shape).
    labels: int32 `(N,)` emotion class ids (`ser_jax.labels.VOCABULARY`).
    actors: int32 `(N,)` RAVDESS actor ids (0 for clips of other corpora).
    file_names: one name per clip ('' when the source has none).
    resized_to: the shape every image was resized to, or None (raw lengths).
    speakers: str `(N,)` speaker ids ('ravdess:04', 'savee:DC'); None: from `actors`.
    groups: int32 `(N,)` index of the dataset each clip came from (0: config.data.name,
      i: config.data.extra_train[i - 1]); None: all 0.
  """
  images: list[np.ndarray]
  labels: np.ndarray
  actors: np.ndarray
  file_names: list[str]
  resized_to: tuple[int, int] | None = None
  speakers: np.ndarray | None = None
  groups: np.ndarray | None = None
  normalized: str = 'none'

  def __post_init__(self):
    if self.speakers is None:
      self.speakers = np.asarray([speaker_key(int(a)) for a in self.actors], dtype=str)
    if self.groups is None:
      self.groups = np.zeros(len(self.images), np.int32)

  def __len__(self) -> int:
    return len(self.images)

  def speaker_ids(self) -> list[int | str]:
    """The speakers present as folds name them, sorted (what reports list, not what a
    fold configured): RAVDESS actor ints, other corpora's speaker strings."""
    return sort_speakers({int(a) if a else str(s) for a, s in zip(self.actors, self.speakers)})

  def take(self, indices: Sequence[int]) -> 'Examples':
    idx = np.asarray(indices, dtype=np.int64)
    return Examples(
        images=[self.images[i] for i in indices], labels=self.labels[idx],
        actors=self.actors[idx], file_names=[self.file_names[i] for i in indices],
        resized_to=self.resized_to, speakers=self.speakers[idx], groups=self.groups[idx],
        normalized=self.normalized)


def concatenate(parts: Sequence[Examples]) -> Examples:
  """The clips of `parts` in order; part i's clips get group i."""
  if len({p.resized_to for p in parts}) > 1 or len({p.normalized for p in parts}) > 1:
    raise ValueError('concatenate: the parts were resized or normalised differently')
  return Examples(
      images=[im for p in parts for im in p.images],
      labels=np.concatenate([p.labels for p in parts]),
      actors=np.concatenate([p.actors for p in parts]),
      file_names=[n for p in parts for n in p.file_names], resized_to=parts[0].resized_to,
      speakers=np.concatenate([p.speakers for p in parts]),
      groups=np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)]),
      normalized=parts[0].normalized)


def sort_speakers(speakers: Iterable[int | str]) -> list[int | str]:
  """Speaker ids sorted: RAVDESS actor ints first, then speaker strings."""
  return sorted({int(s) if isinstance(s, (int, np.integer)) else str(s) for s in speakers},
                key=lambda s: (isinstance(s, str), s))


def speaker_key(speaker: int | str) -> str:
  """A fold's speaker id as examples store it: RAVDESS actor 4 -> 'ravdess:04'."""
  if isinstance(speaker, (int, np.integer)):
    return labels_lib.speaker_id('ravdess', f'{int(speaker):02d}')
  return str(speaker)


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
  images, labels, actors, speakers, names = [], [], [], [], []
  getitems = getattr(source, '__getitems__', None)
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    items = getitems(keys) if getitems is not None else [source[i] for i in keys]
    for ex in items:
      try:
        image = np.asarray(ex['log_mel'], dtype=np.float32)
        labels.append(int(ex['emotion']))
        # RAVDESS 1.0.0 builds have `actor` only; other corpora `speaker` only.
        actor = int(ex['actor']) if 'actor' in ex else 0
        speakers.append(_to_str(ex['speaker']) if 'speaker' in ex else
                        speaker_key(int(ex['actor'])))
      except KeyError as e:
        raise errors.UserError(f'{dataset_name}: examples need log_mel, emotion and speaker '
                               f'(or actor); missing {e} (keys: {sorted(ex)})') from e
      if image.ndim != 2:
        raise errors.UserError(f'{dataset_name}: log_mel must be (n_mels, frames), got '
                               f'shape {image.shape}')
      images.append(image)
      actors.append(actor)
      names.append(_to_str(ex.get('file_name', '')))
  return Examples(images=images, labels=np.asarray(labels, np.int32),
                  actors=np.asarray(actors, np.int32), file_names=names,
                  speakers=np.asarray(speakers, dtype=str))


def _speaker_ids(examples: Examples, keys, as_actors: bool) -> list:
  """Speaker keys as the request named them, for an error message: RAVDESS actor ints only
  (`as_actors`) or speaker strings of every corpus. Unlike `Examples.speaker_ids`, which
  mixes the two as reports list speakers, so that the message answers in the asked kind."""
  if as_actors:
    return sorted({int(examples.actors[i]) for i in np.flatnonzero(
        np.isin(examples.speakers, list(keys))) if examples.actors[i]})
  return sorted(keys)


def _speaker_indices(examples: Examples, speakers: Iterable[int | str], dataset_name: str,
                     among: np.ndarray | None = None) -> np.ndarray:
  """Indices of the clips of `speakers` (within the `among` mask); see select_speakers."""
  wanted = sort_speakers(speakers)
  as_actors = all(isinstance(s, (int, np.integer)) for s in wanted)
  kind = 'actors' if as_actors else 'speakers'
  among = np.ones(len(examples), bool) if among is None else among
  keep = np.flatnonzero(np.isin(examples.speakers, [speaker_key(s) for s in wanted]) & among)
  if keep.size == 0:
    present = _speaker_ids(examples, set(examples.speakers[among].tolist()), as_actors)
    raise errors.UserError(
        f'Empty data selection: no clips of {kind} {wanted} in {dataset_name} '
        f'(it holds {kind} {present}). Check config.folds and config.data.')
  found = set(examples.speakers[keep].tolist())
  missing = [s for s in wanted if speaker_key(s) not in found]
  if missing:
    log.warning('%s holds no clips of %s %s (selected %s)', dataset_name, kind, missing,
                wanted)
  return keep


def select_speakers(examples: Examples, speakers: Iterable[int | str], *,
                    dataset_name: str = 'dataset') -> Examples:
  """Keeps the clips of `speakers` (RAVDESS actor ints or speaker strings).

  An empty result is an error naming both sides; speakers without clips are a warning.
  """
  return examples.take(_speaker_indices(examples, speakers, dataset_name).tolist())


def fold_speakers(data_config, examples: Examples) -> tuple[str, ...] | None:
  """The speakers folds are made of: None for RAVDESS (its actors 1..24, fixed so the
  predecessor's folds never depend on the data), else dataset 0's speaker strings."""
  if str(data_config.name).partition('/')[0] == 'ravdess':
    return None
  return tuple(sorted(set(examples.speakers[examples.groups == 0].tolist())))


def fold_split(examples: Examples, fold, *, dataset_name: str = 'dataset'
               ) -> tuple[Examples, Examples]:
  """(train, test) clips of a speaker-independent fold (see the module docstring).

  Test: dataset 0's clips of `fold.test`. Train: dataset 0's clips of `fold.train`, then
  every clip of the other datasets whose speaker is not a test speaker (a RAVDESS song
  clip of a held-out speech actor stays out).
  """
  main = examples.groups == 0
  test = _speaker_indices(examples, fold.test, dataset_name, main)
  train = _speaker_indices(examples, fold.train, dataset_name, main)
  held_out = np.isin(examples.speakers, [speaker_key(s) for s in fold.test])
  extra = np.flatnonzero(~main & ~held_out)
  if (~main & held_out).any():
    log.info('%d clips of the other datasets are left out of training: their speakers are '
             'test speakers of this fold', int((~main & held_out).sum()))
  return (examples.take(np.concatenate([train, extra]).tolist()),
          examples.take(test.tolist()))


def check_labels(examples: Examples, num_classes: int, dataset_names: Sequence[str]) -> None:
  """Raises UserError if a clip's emotion has no class in a `num_classes` model.

  `dataset_names[g]` names group g's dataset in the message.
  """
  bad = examples.labels >= num_classes
  if bad.any():
    emotions = sorted({labels_lib.VOCABULARY[int(c)] for c in examples.labels[bad]})
    where = sorted({dataset_names[int(g)] for g in examples.groups[bad]})
    raise errors.UserError(
        f'{", ".join(where)} holds {int(bad.sum())} clips of {emotions} (class ids '
        f'{sorted({int(c) for c in examples.labels[bad]})}), but config.model.num_classes='
        f'{num_classes}; set config.model.num_classes={int(examples.labels.max()) + 1} '
        '(classes: ser_jax.labels.VOCABULARY) or train without that dataset')


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
  style_p = float(data_config.get('freq_mixstyle', 0.0))
  if not 0.0 <= style_p <= 1.0:
    raise errors.UserError('config.data.freq_mixstyle must be in [0, 1] (the probability '
                           f'per training clip), got {style_p}')
  style_alpha = float(data_config.get('freq_mixstyle_alpha', 0.3))
  if not style_alpha > 0.0:
    raise errors.UserError('config.data.freq_mixstyle_alpha must be > 0 (the Beta '
                           f'distribution of the mixing weight), got {style_alpha}')
  if data_config.crop_mode == 'resize':
    # The warps act on the full clip before cropping (a resize would undo a tempo change),
    # and a resized clip has input_shape's length.
    for name in ('time_stretch', 'freq_warp', 'freq_mixstyle', 'eval_frames'):
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


def group_quotas(sizes: Sequence[int], weights: Sequence[float], total: int) -> np.ndarray:
  """Clips per group in an epoch of `total`: shares weight / sum(weights), rounded so they
  sum to `total` (largest remainders first, ties to the lower group)."""
  w = np.asarray(weights, np.float64)
  if len(w) != len(sizes) or (w < 0).any() or w.sum() <= 0:
    raise errors.UserError(f'config.data.sampling_weights={tuple(weights)}: expected '
                           f'{len(sizes)} non-negative weights, not all 0 (one for '
                           'config.data.name, then one per config.data.extra_train)')
  empty = [g for g, (n, wg) in enumerate(zip(sizes, w)) if wg > 0 and n == 0]
  if empty:
    raise errors.UserError(f'config.data.sampling_weights give datasets {empty} a weight, '
                           'but this fold has no training clips of them')
  raw = total * w / w.sum()
  quotas = np.floor(raw).astype(np.int64)
  order = np.argsort(-(raw - quotas), kind='stable')
  quotas[order[:total - int(quotas.sum())]] += 1
  return quotas


def epoch_order(num_examples: int, seed: int | Sequence[int], epoch: int,
                groups: np.ndarray | None = None, weights: Sequence[float] = ()
                ) -> np.ndarray:
  """The training order of `epoch`: `num_examples` clip indices, a pure function of
  (seed, epoch).

  Without `weights`: a permutation of every clip. With one weight per group (`groups`
  gives each clip's): `group_quotas` clips of each group, each group's drawn in passes
  over its clips (a fresh permutation per pass), then shuffled together.
  """
  seed = _as_seed(seed)
  rng = _rng(*seed, epoch)
  if not weights:
    return rng.permutation(num_examples)
  members = [np.flatnonzero(groups == g) for g in range(len(weights))]
  quotas = group_quotas([len(m) for m in members], weights, num_examples)
  chosen = []
  for g, (m, quota) in enumerate(zip(members, quotas)):
    passes = -(-int(quota) // max(len(m), 1))  # ceil
    draws = [m[_rng(*seed, epoch, 0x67726F75, g, p).permutation(len(m))]
             for p in range(passes)]
    chosen.append(np.concatenate(draws)[:quota] if draws else np.zeros(0, np.int64))
  chosen = np.concatenate(chosen)
  return chosen[rng.permutation(num_examples)]


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


def _mel_statistics(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-mel-bin mean and standard deviation over time of `(mel, frames)`: `(mel, 1)` each."""
  mean = image.mean(axis=1, keepdims=True)
  # ddof=1 and eps 1e-6 as EfficientAT's own mixstyle (torch's unbiased var); one frame: 0.
  var = image.var(axis=1, ddof=1, keepdims=True) if image.shape[1] > 1 else 0.0 * mean
  return mean, np.sqrt(var + 1e-6)


def freq_mixstyle(image: np.ndarray, partner: np.ndarray, lam: float) -> np.ndarray:
  """Freq-MixStyle: `image` with each mel bin's time statistics moved toward `partner`'s.

  Each bin is normalised by its own mean and std over time, then given the mixture
  `lam * own + (1 - lam) * partner's` of both: the spectral envelope and its variation (much
  of a voice and a microphone) are blended, the frame-to-frame content stays `image`'s.
  MixStyle (Zhou et al., ICLR 2021) with frequency-wise statistics, as EfficientAT's and
  CP-JKU's acoustic-scene training use it against recording-device shift.
  """
  mean, std = _mel_statistics(image)
  p_mean, p_std = _mel_statistics(partner)
  mixed_mean = lam * mean + (1.0 - lam) * p_mean
  mixed_std = lam * std + (1.0 - lam) * p_std
  return ((image - mean) / std * mixed_std + mixed_mean).astype(np.float32)


def _augment_clip(image: np.ndarray, examples: Examples, data_config,
                  rng: np.random.Generator) -> np.ndarray:
  """Training-time transforms of the full clip (before cropping): style, tempo, mel axis."""
  style_p = float(data_config.get('freq_mixstyle', 0.0))
  # Drawn only when enabled, so every other augmentation's random stream stays unchanged.
  if style_p and rng.random() < style_p:
    partner = examples.images[int(rng.integers(len(examples)))]  # any training clip
    alpha = float(data_config.get('freq_mixstyle_alpha', 0.3))
    image = freq_mixstyle(image, partner, float(rng.beta(alpha, alpha)))
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
      image = _augment_clip(image, examples, data_config, rng)
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
                  process_index: int = 0, process_count: int = 1,
                  targets: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
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
    targets: `(N, num_classes)` per-clip training targets (distillation's soft ones,
      ser_jax/distill.py) instead of the labels' one-hot rows; mixup mixes them alike.

  `data_config.sampling_weights` (when set) weights the datasets of `examples.groups`.
  """
  seed = _as_seed(seed)
  n = len(examples)
  if n == 0:
    raise ValueError('train_batches: the training selection is empty')
  order = epoch_order(n, seed, epoch, examples.groups,
                      tuple(data_config.get('sampling_weights', ()) or ()))
  num_steps = steps_per_epoch(n, batch_size)
  host = _host_slice(batch_size, process_index, process_count)
  alpha = float(data_config.mixup_alpha)
  if targets is None:
    targets = np.eye(num_classes, dtype=np.float32)[examples.labels]  # (N, C) one-hot
  elif targets.shape != (n, num_classes):
    raise ValueError(f'train_batches: targets of shape {targets.shape} for {n} clips and '
                     f'{num_classes} classes')
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
    batch_targets = targets[idx[host]]  # (B, C)
    if alpha > 0:
      partner_labels = examples.labels[partner[host]]
      batch_targets = lam * batch_targets + (1.0 - lam) * targets[partner[host]]
      if lam < 0.5:
        labels = partner_labels
    yield {
        'image': np.stack(images)[..., None].astype(np.float32),  # (B, mel, time, 1)
        'mask': np.stack(masks),  # (B, time)
        'label': labels.astype(np.int32),
        'targets': batch_targets,
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
  # None lets the builder read its own variable ($RAVDESS_DIR, $TESS_DIR, ...).
  return data_config.get('manual_dir') or None


def _tfds_name(data_config, name: str | None = None) -> str:
  from ser_jax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.tfds_name(data_config, name)


def prepare_dataset(data_config):
  """Returns the prepared TFDS builder of `config.data`, building it when missing.

  The TFDS name is `config_lib.tfds_name(config.data)` (e.g. 'ravdess/speech' with
  front end 'predecessor48k' -> 'ravdess/speech_predecessor48k'). Building reads the
  corpus from `config.data.manual_dir` when given, else from the builder's variable
  ($RAVDESS_DIR, $TESS_DIR, ...), else RAVDESS is downloaded; only when
  `config.data.download` is True.
  """
  return prepare_tfds(_tfds_name(data_config), data_config.get('data_dir'),
                  _manual_dir(data_config), bool(data_config.download))


def prepare_tfds(name: str, data_dir: str | None, manual_dir: str | None, download: bool):
  """`prepare_dataset` by TFDS name (e.g. 'ravdess/speech_predecessor48k')."""
  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow_datasets as tfds
  import tfds_corpora  # registers ser_tess, ser_savee, ser_emodb, ser_crema_d
  import tfds_ravdess  # registers ravdess
  # pylint: enable=g-import-not-at-top,unused-import
  base, _, version = name.partition(':')
  if version:  # an explicit version is read if prepared, never built
    missing = (f'config.data.version={version!r}: {base} {version} is not prepared in '
               f'{data_dir or "the default data_dir"}')
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except AssertionError as e:  # TFDS's "cannot be loaded at version ..."
      raise errors.UserError(f'{missing} ({e})') from None
    if not builder.is_prepared():
      raise errors.UserError(f'{missing}; unset config.data.version to build it')
    return builder
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  on_disk = _prepared_versions(builder)
  if on_disk:  # never build a new version next to one a user may be relying on
    raise errors.UserError(
        f'{os.path.dirname(str(builder.data_dir))} holds {name} {", ".join(on_disk)}, not '
        f'{builder.version} (this code\'s): read it with config.data.version='
        f"'{on_disk[-1]}', or build {builder.version} into another data_dir or with "
        f'python -m tfds_corpora {base.partition("/")[0]} --config={base.partition("/")[2]}')
  if not download:
    dataset, _, config = name.partition('/')
    raise errors.UserError(
        f'TFDS dataset {name} is not prepared in {builder.data_dir} and '
        f'config.data.download is False. Build it (python -m tfds_corpora {dataset} '
        f'--config={config} --data_dir=...) or set config.data.download=True with '
        'config.data.manual_dir or the builder\'s variable ($RAVDESS_DIR, $TESS_DIR, ...).')
  log.info('Preparing %s in %s (manual_dir=%s)', name, builder.data_dir, manual_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
      file_format='array_record')
  return builder


def _prepared_versions(builder) -> list[str]:
  """Versions of `builder`'s dataset and config already prepared in its data_dir."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  config_dir = epath.Path(builder.data_dir).parent
  if not config_dir.is_dir():
    return []
  return sorted(p.name for p in config_dir.iterdir() if (p / 'dataset_info.json').exists())


@functools.lru_cache(maxsize=4)
def _load_all_cached(name: str, data_dir: str | None, manual_dir: str | None,
                     download: bool) -> Examples:
  source = prepare_tfds(name, data_dir, manual_dir, download).as_data_source(split='train')
  return read_source(source, dataset_name=name)


def load_all(data_config) -> Examples:
  """Every clip of `config.data.name` (group 0), then of each `config.data.extra_train`
  dataset (groups 1, 2, ...; same front end, built from the builders' own variables such as
  $TESS_DIR), each read once per process and cached."""
  names = [data_config.name, *(data_config.get('extra_train') or ())]
  parts = [_load_all_cached(_tfds_name(data_config, name), data_config.get('data_dir'),
                            _manual_dir(data_config) if i == 0 else None,
                            bool(data_config.download))
           for i, name in enumerate(names)]
  return parts[0] if len(parts) == 1 else concatenate(parts)
