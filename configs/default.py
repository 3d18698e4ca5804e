"""Default experiment: every field any experiment may set, with the predecessor's protocol.

Each experiment file in this folder starts from `get_config()` here and changes only what
differs. Any field can be overridden on the command line, e.g.
`python launch/train.py --config=configs/cnnx.py --config.num_epochs=2`.
Passing `:tiny` after the file (`--config=configs/cnnx.py:tiny`) selects the smoke-test variant.
"""
import ml_collections


def get_config(arg=None):
  """Returns the default config (CNN-X on speech, predecessor's 4 folds)."""
  c = ml_collections.ConfigDict()
  c.seed = 41

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cnnx'  # one of ser_jax.models.MODELS
  c.model.num_classes = 8
  c.model.dtype = 'float32'  # compute dtype; 'bfloat16' on accelerators. Params stay float32.
  c.model.kwargs = ml_collections.ConfigDict()  # extra constructor arguments, model specific

  c.data = ml_collections.ConfigDict()
  c.data.name = 'ravdess/speech_predecessor48k'  # TFDS name/config
  c.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.manual_dir = ml_collections.config_dict.placeholder(str)  # RAVDESS zips or Actor_NN/ folders; None: $RAVDESS_DIR
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
  c.data.num_workers = 0  # input-pipeline worker processes (0: in the main process)

  c.folds = ml_collections.ConfigDict()
  c.folds.scheme = 'predecessor'  # 'predecessor' (its 4 folds) | 'kfold' | 'loao' (leave one actor out)
  c.folds.k = 4  # for 'kfold'
  c.folds.seed = 351  # for 'kfold'
  c.folds.which = ()  # fold indices to run; () runs all
  c.folds.test_actors = ()  # explicit held-out actors (overrides scheme) for a single custom fold
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

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'constant'  # 'constant' | 'warmup_cosine'
  c.schedule.warmup_epochs = 0.0

  c.parallel = 'pmap'  # 'pmap' (axis 'batch') | 'jit' (same step on a device mesh)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_epochs = 5
  c.checkpoint.keep = 2

  c.init = ml_collections.ConfigDict()
  c.init.pretrained = ''  # .pth/.pt file or an Orbax checkpoint from launch/import_weights.py
  c.init.source = ''  # converter name for a .pth (see ser_jax.pretrained); '' for Orbax
  c.init.dont_load = ()  # regexes of param paths meant to differ (new head, new stem)
  c.init.expect_pretrained = False  # warn loudly when True and no weights are given

  c.log_every_steps = 10
  c.eval_every_epochs = 1

  return with_variant(c, arg, __file__)


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
    raise ValueError(f'Unknown config variant {arg!r} for {config_file}; known: tiny')
  return c


def top_level_parts(*names):
  """`init.dont_load` regexes for whole top-level submodules (params and batch_stats).

  Anchored on the first path element, with or without a leading 'params/' or
  'batch_stats/', so e.g. a 'conv1' inside a residual block never matches 'conv1'.
  """
  return tuple(rf'^(params/|batch_stats/)?{n}(/.*)?$' for n in names)
