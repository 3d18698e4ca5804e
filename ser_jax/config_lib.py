"""Experiment configs: the default (every field, documented), variants, validation.

Experiment files in `configs/` start from `default()` and change only what differs:

    from ser_jax import config_lib

    def get_config(arg=None):
      c = config_lib.default()
      c.model.name = 'cnn14'
      return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(64, 64))

(`config_flags.DEFINE_config_file` loads a config file by path with a plain
`SourceFileLoader`, so a config can import installed packages but not its neighbours in
`configs/`; the shared part lives here.)

Entry points call `validate(config)` once, before anything slow: it checks every setting
that can be checked without the data and returns the folds to run. `tfds_name(config.data)`
is the one place a dataset name and a front end become a TFDS name. `resume_differences`
is the rule of what a resumed run may change (`RESUMABLE_FIELDS`); launchers define their
`--config` flag with `define_config_flag` and parse flags with `parse_flags`, so a misspelt
`--config.<key>` is one line.
"""

from __future__ import annotations

import copy
import difflib
import numbers
import os
import re
import sys
from typing import Any, Mapping, Sequence

import ml_collections

from ser_jax import errors
from ser_jax import splits

PARALLEL_MODES = ('pmap', 'jit')


def default() -> ml_collections.ConfigDict:
  """Every field any experiment may set, with the predecessor's protocol (CNN-X, speech)."""
  c = ml_collections.ConfigDict()
  c.seed = 41

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cnnx'  # one of ser_jax.models.MODELS
  c.model.num_classes = 8
  c.model.dtype = 'float32'  # compute dtype; 'bfloat16' on accelerators. Params stay float32.
  c.model.kwargs = ml_collections.ConfigDict()  # extra constructor arguments, model specific

  c.data = ml_collections.ConfigDict()
  c.data.name = 'ravdess/speech'  # dataset (and subset) without the front end: DATASETS
  # Multi-corpus training: datasets (names like data.name, same front end) whose clips join
  # every fold's training set, except clips of the fold's test speakers; data.name alone is
  # tested (input_pipeline.fold_split). E.g. ('ser_tess', 'ser_savee'); configs/multicorpus.py.
  c.data.extra_train = ()
  # Per-dataset sampling weights (data.name first, then extra_train): an epoch keeps the
  # training selection's size, dataset g filling a share w_g / sum(w) of it
  # (input_pipeline.epoch_order). (): every training clip once per epoch.
  c.data.sampling_weights = ()
  c.data.frontend = 'predecessor48k'  # ser_jax.features.FRONTENDS; the TFDS name is tfds_name()
  # data.name's TFDS version: '' the builder's own; an older one present in data_dir is read,
  # never built (e.g. '1.0.0': a RAVDESS build from before the shared schema, same log-mels).
  c.data.version = ''
  c.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.manual_dir = ml_collections.config_dict.placeholder(str)  # data.name's folder or zip (RAVDESS zips, Actor_NN/); None: the builder's $RAVDESS_DIR, $TESS_DIR, ...
  c.data.download = True  # build the dataset (downloading if needed) when it is not prepared yet
  c.data.input_shape = (128, 256)  # (mel, time) the model sees
  c.data.crop_mode = 'resize'  # 'resize': bilinear resize (predecessor); 'crop_pad': random crop / pad + mask
  c.data.specaugment = ml_collections.ConfigDict()
  c.data.specaugment.enabled = False
  c.data.specaugment.num_freq_masks = 2
  c.data.specaugment.max_freq_width = 16
  c.data.specaugment.num_time_masks = 2
  c.data.specaugment.max_time_width = 32
  c.data.mixup_alpha = 0.0  # 0 disables mixup
  # crop_pad only: training-time warps of the full clip, before cropping (0 disables):
  c.data.time_stretch = 0.0  # tempo factor drawn from U[1 - s, 1 + s] (time axis resampled)
  c.data.freq_warp = 0.0  # mel-axis stretch factor from U[1 - w, 1 + w] (VTLP-style)
  c.data.freq_mixstyle = 0.0  # probability per clip of Freq-MixStyle with a random partner
  c.data.freq_mixstyle_alpha = 0.3  # its mixing weight ~ Beta(a, a) (EfficientAT's 0.3)
  c.data.eval_frames = 0  # crop_pad: evaluation clip frames (pad/centre crop); 0: input_shape[1]
  c.data.normalize = 'none'  # per clip, once: 'none' | 'utterance' (mean/std) | 'mel' (per mel bin)
  c.data.num_workers = 0  # input-pipeline worker processes (0: in the main process)

  c.folds = ml_collections.ConfigDict()
  # Over RAVDESS's actors 1..24, or the speakers of another data.name ('savee:DC', ...):
  # 'predecessor' (its 4 RAVDESS folds) | 'kfold' (k, seed) | 'loso' (leave one speaker
  # out; 'loao' is its RAVDESS name). TESS/SAVEE/EmoDB: 'loso'; CREMA-D: 'kfold'.
  c.folds.scheme = 'predecessor'
  c.folds.k = 4  # for 'kfold'
  c.folds.seed = 351  # for 'kfold'
  c.folds.which = ()  # fold indices to run; () runs all
  c.folds.test_actors = ()  # explicit held-out speakers (RAVDESS actor ints or 'savee:DC', ...) for one custom fold
  # Recipe selection without the test actors: > 0 holds out this many of each fold's
  # training actors (gender-balanced, fixed by validation_seed; splits.validation_fold),
  # trains on the rest and reports on them. The fold's test actors are not used at all.
  c.folds.validation_actors = 0
  c.folds.validation_seed = 0

  c.batch_size = 32  # global, across all devices and hosts
  c.eval_batch_size = 64
  c.num_epochs = 60

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam_l2'  # 'adam_l2' (PyTorch Adam weight_decay: L2 added to the gradient) | 'adamw'
  c.optimizer.learning_rate = 1e-4
  c.optimizer.weight_decay = 1e-5
  c.optimizer.grad_clip_norm = 0.0  # 0 disables clipping
  c.optimizer.label_smoothing = 0.0
  # Regex (re.search) of the param paths that train, e.g. '^classifier_5/'; others get zero
  # updates (no gradient step, no L2 or weight decay). '' trains all.
  c.optimizer.trainable = ''
  c.optimizer.ema_decay = 0.0  # > 0: evaluate an exponential moving average of the weights
  # Layer-wise learning-rate decay: the params of layer_groups[k] (regexes, re.search on
  # paths, ordered from the output down) learn at lr * layer_decay**k. 1.0 disables it.
  c.optimizer.layer_decay = 1.0
  c.optimizer.layer_groups = ()

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'constant'  # 'constant' | 'warmup_cosine'
  c.schedule.warmup_epochs = 0.0

  c.parallel = 'pmap'  # 'pmap' (axis 'batch') | 'jit' (same step on a device mesh)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_epochs = 5
  c.checkpoint.keep = 2

  c.init = ml_collections.ConfigDict()
  c.init.pretrained = ''  # weights file (.pth/.pt/.safetensors) or an import_weights.py directory
  c.init.source = ''  # converter name for a .pth (ser_jax.convert.SOURCES); '' for a directory
  c.init.dont_load = ()  # regexes of param paths meant to differ (new head, new stem)
  c.init.expect_pretrained = False  # warn loudly when True and no weights are given

  # Soft targets from finished runs' ensemble (ser_jax/distill.py); () trains on labels.
  c.distill = ml_collections.ConfigDict()
  c.distill.teachers = ()  # training workdirs (their fold checkpoints predict this fold's clips)
  c.distill.weight = 0.0  # the teachers' share of each target: (1 - w) one-hot + w teachers
  c.distill.temperature = 1.0  # teachers' softmax(logits / T); T > 1 softens their targets

  # How this recipe's settings were chosen (printed in results.md). '' for the
  # predecessor's recipes, which are reproduced unchanged.
  c.selection_rule = ''

  c.log_every_steps = 10
  c.eval_every_epochs = 1
  return c


def with_variant(c, arg, config_file, tiny_input_shape=None):
  """Applies the `:arg` variant of `config_file`: None (as is) or 'tiny'; else an error.

  'tiny' is the smoke-test variant: 2 epochs, one fold, small batches and, where the
  experiment names one, a small input shape its model still accepts.
  """
  if arg == 'tiny':
    c.num_epochs = 2
    c.batch_size = 8
    c.eval_batch_size = 8
    c.folds.which = (0,)
    c.checkpoint.every_epochs = 1
    c.log_every_steps = 1
    if tiny_input_shape is not None:
      c.data.input_shape = tiny_input_shape
  elif arg:
    raise errors.UserError(f'Unknown config variant {arg!r} for {config_file}; known: tiny')
  return c


def top_level_parts(*names):
  """`init.dont_load` regexes for whole top-level submodules (params and batch_stats).

  Anchored on the first path element, with or without a leading 'params/' or
  'batch_stats/', so e.g. a 'conv1' inside a residual block never matches 'conv1'.
  """
  return tuple(rf'^(params/|batch_stats/)?{n}(/.*)?$' for n in names)


# ----------------------------------------------------------------------------- command line


def check_overrides(config, keys) -> None:
  """Raises UserError for the first dotted key of `keys` that `config` does not have.

  The message names the key, says it does not exist and lists the closest known keys
  (difflib), e.g. `optimizer.learnig_rate` -> `optimizer.learning_rate`.
  """
  known = sorted(_flatten(config.to_dict()))
  for key in keys:
    node, parts = config, key.split('.')
    for i, part in enumerate(parts):
      if hasattr(node, 'keys') and part in node:
        node = node[part]
        continue
      where = '.'.join(parts[:i])
      close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
      if close:
        hint = '; closest known keys: ' + ', '.join(f'config.{c}' for c in close)
      else:  # e.g. a new name: the keys of the level it was meant for
        level = sorted(node.keys()) if hasattr(node, 'keys') else []
        hint = ('; known keys there: ' + ', '.join(
            f'config.{where}.{k}' if where else f'config.{k}' for k in level)
                if level else '')
      raise errors.UserError(
          f'--config.{key}: config key {key!r} does not exist'
          + (f' ({where!r} has no {part!r})' if where else '') + hint
          + ' (keys cannot be added on the command line; new ones go in a config file)')


def define_config_flag(help_string: str, *, default: str | None = None,
                       lock_config: bool = True):
  """The launchers' `--config` flag: ml_collections' config-file flag (a FlagHolder).

  With a `default` file and no --config on the command line, ml_collections applies the
  `--config.<key>` overrides while defining the flag; an unknown key exits with one line
  here, as `parse_flags` does for the others.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  try:
    return config_flags.DEFINE_config_file('config', default, help_string,
                                           lock_config=lock_config)
  except (AttributeError, KeyError):
    _exit_on_unknown_override(sys.argv, default)
    raise


def quiet_logging_unless_asked() -> None:
  """Launchers that print a result log at WARNING unless `--verbosity` was given: Orbax and
  JAX log at INFO on every restore, which would bury the result on stderr."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def parse_flags(argv: list[str]) -> list[str]:
  """The launchers' absl flags parser: `app.run(main, flags_parser=config_lib.parse_flags)`.

  absl's own parser, except that an override of a config key that does not exist
  (`--config.optimizer.learnig_rate=1e-3`) exits with one line naming the key and the
  closest known keys: ml_collections raises a chained AttributeError/KeyError for it,
  which absl does not catch (a 55-line traceback). Any other error is left as it is.
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    _exit_on_unknown_override(argv, flags.FLAGS['config'].default)
    raise


def _exit_on_unknown_override(argv: list[str], default) -> None:
  """`sys.exit` with `check_overrides`' line if a `--config.<key>` of argv is unknown.

  `default` is the flag's default: a config file path, a loaded config, or None.
  """
  source, keys = default, []
  for i, arg in enumerate(argv):
    if re.match(r'^--?config(=|$)', arg):  # --config=FILE or --config FILE
      source = arg.split('=', 1)[1] if '=' in arg else argv[i + 1]
    override = re.match(r'^--?(?:no)?config\.([^=]+)', arg)
    if override:
      keys.append(override.group(1))
  if not keys or source is None:
    return
  if isinstance(source, str):
    # pylint: disable-next=g-import-not-at-top
    from ml_collections.config_flags import config_flags
    source = config_flags.ConfigFileFlagParser('config').parse(source)
  try:
    check_overrides(source, keys)
  except errors.UserError as e:
    sys.exit(f'{os.path.basename(argv[0])}: error: {e}')


# ----------------------------------------------------------------------------- names


# Every dataset a config may name: its TFDS builder and the subsets it has (a dataset
# without subsets has one builder config per front end). tests/test_config_lib.py checks
# this against the registered builders (`tfds_ravdess`, `tfds_corpora`).
DATASETS = {
    'ravdess': ('speech', 'song', 'all'),
    'ser_tess': (),
    'ser_savee': (),
    'ser_emodb': (),
    'ser_crema_d': (),
}


def corpus_of(name: str) -> str:
  """The corpus a dataset name reads, as speaker ids spell it: 'ser_tess' -> 'tess'."""
  dataset = str(name).partition('/')[0]
  return dataset[len('ser_'):] if dataset.startswith('ser_') else dataset


def actor_folds(data_config) -> bool:
  """Whether folds are over RAVDESS's actor ints (else over the data's speaker strings)."""
  return corpus_of(data_config.name) == 'ravdess'


def tfds_name(data_config, name: str | None = None) -> str:
  """The TFDS name of `config.data` (or of dataset `name` with its front end).

  A dataset with subsets names one as `<dataset>/<subset>` and gets builder config
  `<subset>_<frontend>`; a dataset without subsets gets builder config `<frontend>`:

    ('ravdess/speech', 'predecessor48k') -> 'ravdess/speech_predecessor48k'
    ('ser_tess', 'predecessor48k')       -> 'ser_tess/predecessor48k'

  `config.data.version`, when set, is appended to `config.data.name`'s (`...:1.0.0`).

  Raises:
    UserError: a dataset or subset that no builder has.
  """
  name = str(data_config.name if name is None else name)
  setting = (f'config.data.name={name!r}' if name == str(data_config.name) else
             f'config.data.extra_train has {name!r}')
  dataset, _, subset = name.partition('/')
  if dataset not in DATASETS:
    close = [d for d in DATASETS if dataset in d]
    raise errors.UserError(
        f'{setting}: unknown dataset'
        + (f' (did you mean {close[0]!r}?)' if close else '')
        + f"; known: 'ravdess/<{'|'.join(DATASETS['ravdess'])}>', "
        + ', '.join(repr(d) for d in DATASETS if not DATASETS[d]))
  if (subset or None) not in (DATASETS[dataset] or (None,)):
    want = (f"one of {dataset}/{{{','.join(DATASETS[dataset])}}}" if DATASETS[dataset]
            else f'{dataset!r} (it has no subsets)')
    raise errors.UserError(f'{setting}: expected {want}')
  config = f'{subset}_{data_config.frontend}' if subset else data_config.frontend
  version = data_config.get('version') if name == str(data_config.name) else ''
  return f'{dataset}/{config}' + (f':{version}' if version else '')


# Spellings of configs written before the front end had its own field (config.json of
# older workdirs): `data.name` 'ravdess/speech_seed48k', converter sources 'seed_<model>'.
_LEGACY_FRONTENDS = {'seed48k': 'predecessor48k', 'predecessor48k': 'predecessor48k',
                     'panns32k': 'panns32k', 'panns16k': 'panns16k'}


def from_dict(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A config from its `to_dict()` (e.g. a workdir's config.json), on top of `default()`.

  Fields the record lacks keep their default; a record from before `data.frontend`
  existed has its front end split off `data.name` ('ravdess/speech_seed48k' ->
  'ravdess/speech' + 'predecessor48k') and 'seed_<model>' sources renamed.
  """
  values = copy.deepcopy(dict(values))
  data = values.setdefault('data', {})
  if 'frontend' not in data:
    head, _, tail = str(data.get('name', '')).rpartition('_')
    if head and tail in _LEGACY_FRONTENDS:
      data['name'], data['frontend'] = head, _LEGACY_FRONTENDS[tail]
  init = values.get('init') or {}
  if str(init.get('source', '')).startswith('seed_'):
    init['source'] = 'predecessor_' + init['source'][len('seed_'):]
  return ml_collections.ConfigDict(_merge(default().to_dict(), values))


def _merge(base: dict, values: Mapping[str, Any]) -> dict:
  """`values` over `base`, recursively for nested dicts (free-form ones like kwargs too)."""
  merged = dict(base)
  for key, value in values.items():
    if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
      merged[key] = _merge(merged[key], value)
    else:
      merged[key] = value
  return merged


# ----------------------------------------------------------------------------- resume

# The only fields a resumed run may change: none of them can change the trained model.
# Every other field of the config is compared with what the checkpoint recorded
# (`resume_differences`), and `num_epochs` follows its own rule (see there).
RESUMABLE_FIELDS = {
    'log_every_steps': 'logging cadence',
    'eval_every_epochs': 'evaluation cadence (evaluation never changes the state)',
    'eval_batch_size': 'evaluation batch size (every clip is evaluated once either way)',
    'checkpoint.every_epochs': 'checkpoint cadence',
    'checkpoint.keep': 'how many checkpoints are kept',
    'data.data_dir': 'where the prepared dataset is read from',
    'data.manual_dir': 'where the audio is read from when the dataset is built',
    'data.download': 'whether a missing dataset is built',
    'data.num_workers': 'input-pipeline processes (the order is a function of seed and epoch)',
    'folds.which': 'which folds this run trains (each fold has its own checkpoints)',
    'init.expect_pretrained': 'only decides whether a missing init.pretrained warns',
    'selection_rule': 'a sentence printed in results.md (how the recipe was chosen)',
}
RESUME_HINT = (
    'A resumed run may change only ' + ', '.join(RESUMABLE_FIELDS) + ', and num_epochs when '
    'the learning-rate schedule does not depend on it (schedule.name constant) and it is '
    'not below the epochs already trained')

_ABSENT = '<absent>'


def resume_differences(recorded: Mapping[str, Any], config, *, trained_epochs: int
                       ) -> list[str]:
  """Training-relevant fields in which `config` differs from a checkpoint's record.

  Args:
    recorded: the config dict the checkpoint was trained with (its meta's `config`;
      fields it lacks take their default, as in `from_dict`).
    config: the config of the run that wants to resume from it.
    trained_epochs: epochs the checkpoint has trained.

  Returns:
    One 'field (recorded -> now)' string per difference, sorted by field; empty when
    resuming cannot change what the run trains. `RESUMABLE_FIELDS` are ignored;
    `num_epochs` may change only under a schedule that does not depend on it
    (`steps.SCHEDULES_USING_NUM_EPOCHS`) and not below `trained_epochs`.
  """
  from ser_jax import steps  # pylint: disable=g-import-not-at-top  # JAX-heavy
  old, new = _flatten(from_dict(recorded).to_dict()), _flatten(config.to_dict())
  diffs = []
  for key in sorted(set(old) | set(new)):
    if key in RESUMABLE_FIELDS or key == 'num_epochs':
      continue
    a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
    if a != b:
      diffs.append(f'{key} ({a!r} -> {b!r})')
  a, b = int(old['num_epochs']), int(new['num_epochs'])
  schedule = new.get('schedule.name')
  if a != b and schedule in steps.SCHEDULES_USING_NUM_EPOCHS:
    diffs.append(f'num_epochs ({a} -> {b}; the {schedule!r} schedule depends on it)')
  elif b < trained_epochs:
    diffs.append(f'num_epochs ({a} -> {b}; the checkpoint has trained {trained_epochs} '
                 'epochs)')
  return sorted(diffs)


def get_field(config: Any, dotted: str, default: Any = None) -> Any:
  """`config`'s value at `dotted` ('data.input_shape'), a ConfigDict or a plain dict (a
  JSON record); `default` where a part is missing or the value is None."""
  node = config
  for part in dotted.split('.'):
    if node is None:
      return default
    node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
  return default if node is None else node


def differing_fields(a: Any, b: Any, fields: Sequence[str]) -> list[tuple[str, Any, Any]]:
  """`(field, a's value, b's value)` for each of `fields` (dotted) where configs `a` and `b`
  differ, in the order of `fields`. Sequences compare and come back as tuples (a JSON
  record holds a config's tuples as lists), sub-configs as plain dicts."""
  diffs = []
  for field in fields:
    x, y = (_as_tuples(get_field(c, field)) for c in (a, b))
    if x != y:
      diffs.append((field, x, y))
  return diffs


def _as_tuples(value):
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _as_tuples(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_as_tuples(v) for v in value)
  return value


def _flatten(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; tuples as lists (as a JSON record holds them)."""
  flat = {}
  for key, value in d.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = _as_lists(value)
  return flat


def _as_lists(value):
  if isinstance(value, (list, tuple)):
    return [_as_lists(v) for v in value]
  return value


# ----------------------------------------------------------------------------- folds


FOLD_SCHEMES = ('predecessor', 'kfold', 'loso', 'loao')


def get_folds(config, speakers: Sequence[str] | None = None
              ) -> list[tuple[int, splits.Fold]]:
  """(index, fold) pairs to run, from `config.folds`.

  Args:
    config: the experiment config.
    speakers: the speaker strings of `config.data.name`'s clips
      (`input_pipeline.fold_speakers`); None for RAVDESS, whose folds are over its actors
      1..24 whatever the data holds. For another dataset, None only checks the settings
      and returns [] (its folds depend on its speakers).

  Raises:
    UserError: speakers outside the dataset's, an unknown scheme, fold indices the scheme
      lacks, 'predecessor' on another dataset.
  """
  fc = config.folds
  actors = actor_folds(config.data)
  if fc.scheme not in FOLD_SCHEMES:
    raise errors.UserError(f'config.folds.scheme must be one of {FOLD_SCHEMES}, got '
                           f'{fc.scheme!r}')
  if not actors and fc.scheme == 'predecessor' and not fc.test_actors:
    raise errors.UserError(
        f"config.folds.scheme='predecessor' is RAVDESS's 4 folds; for {config.data.name} "
        "choose 'loso' (leave one speaker out) or 'kfold'")
  if not actors and speakers is None:
    return []
  allowed = splits.ACTORS if actors else tuple(speakers)
  try:
    folds = _scheme_folds(fc, allowed, actors)
    which = tuple(int(i) for i in fc.which) if fc.which else tuple(range(len(folds)))
    bad = [i for i in which if not 0 <= i < len(folds)]
    if bad:
      raise errors.UserError(f'config.folds.which has indices {bad}; the scheme has folds '
                             f'0..{len(folds) - 1}')
    for i in which:
      splits.check_fold(folds[i], allowed)
    n_val = int(fc.get('validation_actors', 0) or 0)
    if n_val:
      if not actors:
        raise errors.UserError('config.folds.validation_actors needs RAVDESS (its actors\' '
                               f'genders); {config.data.name} has no gender-balanced rule yet')
      seed = int(fc.get('validation_seed', 0))
      return [(i, splits.validation_fold(folds[i], n_val, seed)) for i in which]
    return [(i, folds[i]) for i in which]
  except errors.UserError:
    raise
  except ValueError as e:  # splits' checks
    raise errors.UserError(f'config.folds: {e}') from None


def _scheme_folds(fc, speakers: Sequence, actors: bool) -> list[splits.Fold]:
  """All folds of the scheme over `speakers` (or the one custom fold of `test_actors`)."""
  if fc.test_actors:
    test = tuple(sorted(int(a) if actors else str(a) for a in fc.test_actors))
    bad = [a for a in test if a not in speakers]
    if bad:
      where = (f'actors {bad} outside 1..{splits.NUM_ACTORS}' if actors else
               f"speakers {bad} outside the data's speakers {list(speakers)}")
      raise errors.UserError(f'config.folds.test_actors has {where}')
    return [splits.Fold(train=tuple(a for a in speakers if a not in test), test=test)]
  if fc.scheme == 'predecessor':
    return splits.predecessor_folds()
  if fc.scheme == 'kfold':
    return splits.kfold(int(fc.k), int(fc.seed), speakers)
  return splits.leave_one_speaker_out(speakers)  # 'loso' / 'loao'


def fold_of(config, fold: int, speakers: Sequence[str] | None = None) -> splits.Fold:
  """Fold `fold` of the config's scheme (any fold, not only `which`).

  `speakers` as for `get_folds` (needed unless the folds are RAVDESS's).
  """
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.folds.which = ()
  folds = get_folds(cfg, speakers)
  if not folds:  # a caller's bug, not the user's
    raise ValueError(f'the folds of {config.data.name} depend on its speakers: pass them')
  if not 0 <= fold < len(folds):
    raise errors.UserError(f'fold {fold} does not exist: the scheme {cfg.folds.scheme!r} '
                           f'has folds 0..{len(folds) - 1}')
  return folds[fold][1]


def fold_test_actors(config, fold: int, speakers: Sequence[str] | None = None
                     ) -> tuple[int | str, ...]:
  """Held-out speakers of fold `fold` of the config's scheme (any fold, not only `which`)."""
  return tuple(fold_of(config, fold, speakers).test)


# ----------------------------------------------------------------------------- validation


# Numbers with bounds: (field, kind, bound). 'int>=': an integer >= bound; '>': a number
# above bound; '>=': a number at least bound; '[)': a number in [low, high); '[]': a number
# in [low, high]. Cadences of 0 are refused rather than read as "every epoch" or "never":
# neither is what 0 says.
_NUMBERS = (('model.num_classes', 'int>=', 2),)
_TRAINING_NUMBERS = (
    ('num_epochs', 'int>=', 1),
    ('log_every_steps', 'int>=', 1),
    ('eval_every_epochs', 'int>=', 1),
    ('checkpoint.every_epochs', 'int>=', 1),
    ('checkpoint.keep', 'int>=', 1),
    ('optimizer.learning_rate', '>', 0.0),
    ('optimizer.weight_decay', '>=', 0.0),
    ('optimizer.grad_clip_norm', '>=', 0.0),  # 0 disables clipping
    ('optimizer.label_smoothing', '[)', (0.0, 1.0)),  # 1 would make every target uniform
    ('optimizer.ema_decay', '[)', (0.0, 1.0)),  # 0 disables the weight average
    ('optimizer.layer_decay', '(]', (0.0, 1.0)),  # 1 disables it
    ('schedule.warmup_epochs', '>=', 0.0),
    ('data.mixup_alpha', '>=', 0.0),  # 0 disables mixup
    ('distill.weight', '[]', (0.0, 1.0)),  # the teachers' share of each target
    ('distill.temperature', '>', 0.0),
    ('data.specaugment.num_freq_masks', 'int>=', 0),
    ('data.specaugment.max_freq_width', 'int>=', 0),
    ('data.specaugment.num_time_masks', 'int>=', 0),
    ('data.specaugment.max_time_width', 'int>=', 0),
    ('folds.validation_actors', 'int>=', 0),
)
_RULES = {'int>=': 'an integer >= {}', '>': 'a number > {}', '>=': 'a number >= {}',
          '[)': 'a number in [{0[0]}, {0[1]})', '[]': 'a number in [{0[0]}, {0[1]}]',
          '(]': 'a number in ({0[0]}, {0[1]}]'}


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _in_bounds(value, kind: str, bound) -> bool:
  """Whether `value` obeys the rule; False for NaN and for non-numbers."""
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    return False
  if kind == 'int>=':
    return _is_int(value) and value >= bound
  if kind == '>':
    return value > bound
  if kind == '>=':
    return value >= bound
  if kind == '[]':
    return bound[0] <= value <= bound[1]
  if kind == '(]':
    return bound[0] < value <= bound[1]
  return bound[0] <= value < bound[1]


def _check_numbers(config, rules) -> None:
  """Raises UserError naming the first field of `rules` outside its bounds."""
  for field, kind, bound in rules:
    node = config
    for part in field.split('.'):
      node = node[part]
    if not _in_bounds(node, kind, bound):
      raise errors.UserError(f'config.{field}={node!r} must be '
                             f'{_RULES[kind].format(bound)}')

def _check_datasets(data_config) -> None:
  """data.name, data.extra_train (known, distinct) and data.sampling_weights (one each)."""
  names = [str(data_config.name), *(str(n) for n in data_config.get('extra_train') or ())]
  for name in names:
    tfds_name(data_config, name)
  if len(set(names)) != len(names):
    raise errors.UserError(f'config.data.extra_train={tuple(names[1:])} repeats a dataset '
                           f'(config.data.name is {names[0]!r})')
  weights = tuple(data_config.get('sampling_weights') or ())
  if weights and (len(weights) != len(names) or min(weights) < 0 or sum(weights) <= 0):
    raise errors.UserError(
        f'config.data.sampling_weights={weights}: expected {len(names)} non-negative '
        f'weights, not all 0, one per dataset of {tuple(names)}')



def validate(config, *, num_devices: int | None = None, training: bool = True
             ) -> list[tuple[int, splits.Fold]]:
  """Checks every setting that needs no data; returns `get_folds(config)`.

  Run once per entry point, before loading data or compiling. Each check builds the
  object the setting describes (model, front end, optimiser, schedule, folds), so the
  checks are the code paths that use them, not copies of their rules.

  Args:
    config: an experiment config.
    num_devices: when given, the batch sizes must split over this many devices.
    training: also check what only training uses (optimiser, schedule, pretrained init).

  Raises:
    UserError: naming the first bad setting and what was expected.
  """
  # pylint: disable=g-import-not-at-top  # JAX-heavy modules, only when validating
  from ser_jax import distill
  from ser_jax import features
  from ser_jax import input_pipeline
  from ser_jax import steps
  from ser_jax import model_init
  # pylint: enable=g-import-not-at-top
  model_init.build_model(config)
  try:
    features.get_frontend(config.data.frontend)
  except ValueError as e:
    raise errors.UserError(f'config.data.frontend: {e}') from None
  _check_datasets(config.data)
  input_pipeline.check_data_config(config.data)
  if config.parallel not in PARALLEL_MODES:
    raise errors.UserError(f'config.parallel must be one of {PARALLEL_MODES}, got '
                           f'{config.parallel!r}')
  for name in ('batch_size', 'eval_batch_size'):
    size = config[name]
    if not _is_int(size) or size < 1 or (num_devices and size % num_devices):
      raise errors.UserError(
          f'config.{name}={size!r} must be a positive multiple of the {num_devices or 1} '
          'devices (it is the global batch, split over devices and hosts)')
  _check_numbers(config, _NUMBERS)
  if training:
    _check_numbers(config, _TRAINING_NUMBERS)
    steps.create_optimizer(config, steps.create_learning_rate_fn(config, 1))
    model_init.check_pretrained_setting(config)
    distill.check_config(config)
  return get_folds(config)
