r"""Imports a PyTorch checkpoint (.pth/.pt) into a Flax model and saves it for ser-jax.

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
launch/evaluate.py and launch/predict.py.
"""

import datetime
import hashlib
import pathlib
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

# Runs from any working directory without installing the package.
_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Optional experiment config (configs/<model>.py): supplies --model, '
    '--num_classes, --source, --dont_load, --frontend and --input_shape unless given.',
    lock_config=False)
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'The .pth/.pt file (torch.save).')
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
                                '(ser_jax.features: predecessor48k, panns32k, panns16k); PANNs '
                                'checkpoints are checked against it. Default for PANNs '
                                'sources: panns32k.')
_INPUT_SHAPE = flags.DEFINE_list('input_shape', None, 'mel,time used to initialise the '
                                 'model (CNN-X needs its training shape, 128,256).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the fresh (--dont_load) parameters.')
flags.mark_flags_as_required(['checkpoint', 'output'])


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _settings():
  """Flags, falling back to --config's fields for those not given on the command line."""
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  given = lambda flag: flags.FLAGS[flag.name].present

  def pick(flag, from_config):
    if given(flag) or config is None:
      return flag.value
    return from_config()

  model = pick(_MODEL, lambda: config.model.name)
  source = pick(_SOURCE, lambda: config.init.source)
  num_classes = pick(_NUM_CLASSES, lambda: int(config.model.num_classes))
  dont_load = pick(_DONT_LOAD, lambda: list(config.init.dont_load))
  frontend = pick(_FRONTEND, lambda: pretrained.frontend_name(config.data.name))
  input_shape = pick(_INPUT_SHAPE, lambda: list(config.data.input_shape))
  missing = [name for name, value in (('--model', model), ('--source', source)) if not value]
  if missing:
    raise app.UsageError(f'{" and ".join(missing)} required (or --config=configs/<model>.py)')
  if frontend is None and source.startswith('panns'):
    frontend = 'panns32k'
  if input_shape is not None:
    if len(input_shape) != 2:
      raise app.UsageError(f'--input_shape must be mel,time; got {input_shape}')
    input_shape = tuple(int(s) for s in input_shape)
  return dict(model=model, source=source, num_classes=num_classes,
              dont_load=[p for p in dont_load if p], frontend=frontend,
              input_shape=input_shape)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  settings = _settings()
  checkpoint = pathlib.Path(_CHECKPOINT.value).absolute()
  output = pathlib.Path(_OUTPUT.value).absolute()
  if output.exists():  # checked first, so a long import is not wasted
    sys.exit(f'import_weights: error: {output} exists; refusing to overwrite it')
  try:
    variables = pretrained.import_checkpoint(
        checkpoint, settings['source'], settings['model'],
        num_classes=settings['num_classes'], dont_load=settings['dont_load'],
        frontend=settings['frontend'], input_shape=settings['input_shape'],
        seed=_SEED.value)
  except (pretrained.CheckpointError, ValueError) as e:
    sys.exit(f'import_weights: error: {e}')
  flat = pretrained.flatten(variables)
  fresh = sorted(p for p in flat if any(re.search(d, p)
                                        for d in settings['dont_load']))
  info = dict(settings, input_shape=list(settings['input_shape'] or
                                         pretrained.init_input_shape(settings['model'])),
              checkpoint=str(checkpoint), checkpoint_sha256=_sha256(checkpoint),
              seed=_SEED.value, fresh=fresh,
              num_parameters=int(sum(v.size for p, v in flat.items()
                                     if p.startswith('params/'))),
              created=datetime.datetime.now(datetime.timezone.utc).isoformat())
  try:
    pretrained.save_imported(output, variables, info)
  except FileExistsError as e:
    sys.exit(f'import_weights: error: {e}')
  print(f'Imported {checkpoint.name} ({settings["source"]}) into {settings["model"]}: '
        f'{len(flat) - len(fresh)} variables loaded, {len(fresh)} freshly initialised'
        f'{" (" + ", ".join(fresh) + ")" if fresh else ""}.')
  print(f'Wrote {output}')


if __name__ == '__main__':
  app.run(main)
