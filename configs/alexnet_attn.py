"""AlexNet + U-attention, fine-tuned from ImageNet: "AlexNet + Attn" row of the table.

Predecessor's protocol (inherited from default.py): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics. The predecessor did not record AlexNet's epoch count; we use 30, the
count of VGG19 + Attn, the model built the same way (1 -> 3 channel stem, pretrained
features, U-attention, new classifier) and fine-tuned in the same table.

Transfer learning: pass the torchvision ImageNet weights file and nothing else,
    --config.init.pretrained=/path/alexnet-owt-7be5be79.pth
(`init.source` names the converter and `init.dont_load` the parts that are new here).

    python launch/train.py --config=configs/alexnet_attn.py --workdir=workdirs/alexnet_attn \
        --config.init.pretrained=/path/alexnet-owt-7be5be79.pth
    python launch/train.py --config=configs/alexnet_attn.py:tiny --workdir=/tmp/alexnet_tiny
"""
import importlib.util
import pathlib


def _default():
  """configs/default.py, loaded by its path next to this file.

  ml_collections' config_flags loads a config file by path, not as a package module, so
  `from configs import default` would work only from the repository root; loading by
  `__file__` works from any working directory and from tests.
  """
  path = pathlib.Path(__file__).resolve().parent / 'default.py'
  spec = importlib.util.spec_from_file_location('ser_jax_configs_default', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  default = _default()
  c = default.get_config()
  c.model.name = 'alexnet_attn'
  c.num_epochs = 30  # Not recorded by the predecessor: VGG19 + Attn's count (module docstring).
  c.init.expect_pretrained = True
  c.init.source = 'torchvision_alexnet'
  # New parts, initialised fresh: the 1 -> 3 channel stem, the attention and the classifier.
  c.init.dont_load = (r'^(params/|batch_stats/)?stem(/.*)?$',
                      r'^(params/|batch_stats/)?attention(/.*)?$',
                      r'^(params/|batch_stats/)?classifier(/.*)?$')
  if arg == 'tiny':
    default.apply_tiny(c)
    # The stride-4 11x11 conv and three 3x3/2 max-pools leave a 1 x 1 map at 64 x 64.
    c.data.input_shape = (64, 64)
  elif arg:
    raise ValueError(f'Unknown config variant {arg!r} for {__file__}; known: tiny')
  return c
