r"""Imports a PyTorch checkpoint (.pth/.pt, or .safetensors) into a Flax model: a thin launcher over
`ser_jax.pretrained.import_to_directory`.

  # The predecessor's own trained CNN-X:
  python launch/import_weights.py --checkpoint=cnnx_fold0.pth --source=predecessor_cnnx \
      --model=cnnx --output=imported/cnnx_fold0
  # PANNs CNN14 (32 kHz) with a new 8-class head:
  python launch/import_weights.py --checkpoint='Cnn14_mAP=0.431.pth' --source=panns_cnn14 \
      --model=cnn14_panns --dont_load=fc_audioset --output=imported/cnn14_panns
  # ImageNet VGG19-BN into VGG19 + Attn: model, source, dont_load from the config:
  python launch/import_weights.py --config=configs/vgg19_attn.py \
      --checkpoint=vgg19_bn-c79401a0.pth --output=imported/vgg19_attn

The checkpoint is read without PyTorch, converted with `ser_jax.convert` (--source), and
strictly merged into a freshly initialised --model: every parameter must come from the
checkpoint with the right shape, except those matched by --dont_load regexes (a new head,
a new stem), which keep their fresh initialisation (--seed). A PANNs checkpoint is checked
against --frontend (the 16 kHz CNN14 needs --frontend=panns16k).

--output is a new directory holding `variables/` (an Orbax StandardCheckpointer checkpoint
of `{'params', 'batch_stats'}`) and `import_info.json` (what was imported, from where). It
is written to a temporary sibling and renamed into place, and never overwritten. Use it as
`--config.init.pretrained=<output>` for training (fine-tuning) or `--weights=<output>` for
launch/evaluate.py, launch/predict.py, launch/tag.py and launch/embed.py. An AudioSet
tagger's class list given with --labels is copied into it (`class_labels_indices.csv`):

  python launch/import_weights.py --checkpoint=mn04_as_mAP_432.pt --source=efficientat_mn \
      --model=efficientat_mn04 --num_classes=527 --frontend=efficientat32k \
      --labels=class_labels_indices.csv --output=imported/mn04_as
"""

import pathlib

from absl import app
from absl import flags

from ser_jax import config_lib
from ser_jax import errors

_CONFIG = config_lib.define_config_flag(
    'Optional experiment config (configs/<model>.py): supplies --model, '
    '--num_classes, --source, --dont_load, --frontend and --input_shape unless given.',
    lock_config=False)
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'The weights file: .pth/.pt (torch.save) '
                                  'or .safetensors, told apart by content.')
_SOURCE = flags.DEFINE_string('source', None, 'Converter (ser_jax.convert.SOURCES), e.g. '
                              'panns_cnn14, torchvision_vgg19_bn, predecessor_cnnx.')
_MODEL = flags.DEFINE_string('model', None, 'Registry model name (ser_jax.models), e.g. '
                             'cnn14_panns, vgg19_attn, cnnx.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 8, 'Output classes of --model.')
_OUTPUT = flags.DEFINE_string('output', None, 'New directory to write (never overwritten).')
_DONT_LOAD = flags.DEFINE_list('dont_load', [], 'Regexes (re.search) of variable paths '
                               "like 'params/classifier/kernel' that keep their fresh "
                               'initialisation: a new head or stem.')
_FRONTEND = flags.DEFINE_string('frontend', None, 'Front end the model will see '
                                '(ser_jax.features: predecessor48k, panns32k, panns16k); '
                                'PANNs checkpoints are checked against it. Default: the '
                                "config's, else panns32k for PANNs sources, else "
                                'predecessor48k.')
_INPUT_SHAPE = flags.DEFINE_list('input_shape', None, "mel,time used to initialise the model; "
                                 "default: the config's, else (the front end's mels, 256) "
                                 '(CNN-X needs its training shape, 128,256).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the fresh (--dont_load) parameters.')
_LABELS = flags.DEFINE_string('labels', None, "A tagger's class list (AudioSet's "
                              'class_labels_indices.csv), one label per output: copied into '
                              '--output for launch/tag.py.')
flags.mark_flags_as_required(['checkpoint', 'output'])


def _config():
  """--config (or the default config) with every flag given on the command line applied."""
  from ser_jax import features  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value or config_lib.default()
  given = lambda flag: flags.FLAGS[flag.name].present or _CONFIG.value is None
  if given(_MODEL):
    config.model.name = _MODEL.value
  if given(_SOURCE):
    config.init.source = _SOURCE.value
  if given(_NUM_CLASSES):
    config.model.num_classes = _NUM_CLASSES.value
  if given(_DONT_LOAD):
    config.init.dont_load = tuple(_DONT_LOAD.value)
  if _FRONTEND.value:
    config.data.frontend = _FRONTEND.value
  elif _CONFIG.value is None:
    config.data.frontend = ('panns32k' if (_SOURCE.value or '').startswith('panns')
                            else 'predecessor48k')
  if _INPUT_SHAPE.value:
    if len(_INPUT_SHAPE.value) != 2:
      raise app.UsageError(f'--input_shape must be mel,time; got {_INPUT_SHAPE.value}')
    config.data.input_shape = tuple(int(s) for s in _INPUT_SHAPE.value)
  elif _CONFIG.value is None:
    config.data.input_shape = (features.get_frontend(config.data.frontend).n_mels, 256)
  missing = [name for name, value in (('--model', config.model.name),
                                      ('--source', config.init.source)) if not value]
  if missing:
    raise app.UsageError(f'{" and ".join(missing)} required (or --config=configs/<model>.py)')
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  with errors.exit_on_user_error('import_weights'):
    config = _config()
    config_lib.validate(config, training=False)
    info = pretrained.import_to_directory(config, pathlib.Path(_CHECKPOINT.value),
                                          pathlib.Path(_OUTPUT.value), seed=_SEED.value,
                                          labels_file=_LABELS.value)
  fresh = info['fresh']
  print(f'Imported {pathlib.Path(info["checkpoint"]).name} ({info["source"]}) into '
        f'{info["model"]}: {info["num_variables"] - len(fresh)} variables loaded, '
        f'{len(fresh)} freshly initialised{" (" + ", ".join(fresh) + ")" if fresh else ""}.')
  print(f'Wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
