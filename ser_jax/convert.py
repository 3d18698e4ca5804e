"""PyTorch state_dict -> Flax variables, one readable rename table per source.

    variables = convert(state_dict, 'predecessor_cnn14_attn')  # {'params': ..., 'batch_stats': ...}

`state_dict` is a flat `dict[str, np.ndarray]` (torch key -> array; reading .pth files without
PyTorch is `ser_jax.pretrained`'s job). A source's table is a list of `Rule`s: the *module
prefix* of a torch key (everything before the last '.') is matched with `re.fullmatch`
against each rule's pattern in order; the first match gives the Flax module path (a
`re.sub` template with '/' separators). The leaf is then mapped by its name and rank:

  | torch leaf                    | Flax                          | layout                  |
  |-------------------------------|-------------------------------|-------------------------|
  | weight, 4-D (O, I, H, W)      | params/<path>/kernel          | -> (H, W, I, O)         |
  | weight, 3-D (O, I, W) conv1d  | params/<path>/kernel          | -> (W, I, O)            |
  | weight, 2-D (out, in) Linear  | params/<path>/kernel          | -> (in, out)            |
  | weight, 1-D BatchNorm         | params/<path>/scale           | unchanged               |
  | bias                          | params/<path>/bias            | unchanged               |
  | running_mean / running_var    | batch_stats/<path>/mean / var | unchanged               |
  | num_batches_tracked           | dropped                       |                         |

Rule kinds besides this default ('auto'): 'raw' copies leaves unchanged under their own name
(e.g. the attention vector `attention.u` -> params/attention/u), 'lstm' splits a single-layer
`nn.LSTM` into Flax's per-gate LSTM cell layout, and a `None` target drops keys on purpose
(e.g. PANNs' fixed front-end buffers). Any key no rule explains, any leaf the kind cannot
convert, and any two keys landing on one Flax path raise `ValueError` listing them.

To add a source: write one table (a list of `Rule`) and register it in `SOURCES`.
"""
import dataclasses
import re
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Rule:
  """One rename rule.

  Attributes:
    pattern: regex fully matching a torch module prefix, e.g. r'conv_layer(\\d)\\.(conv\\d)'.
    target: Flax module path template for `re.sub` (groups allowed), '/'-separated, e.g.
      r'conv_block\\1/\\2'; None drops the matching keys on purpose.
    kind: 'auto' (table in the module docstring), 'raw' (copy leaves unchanged), or 'lstm'.
  """
  pattern: str
  target: str | None
  kind: str = 'auto'


# ---------------------------------------------------------------------------------------------
# Tables, one per source.

# PANNs Cnn14 (Kong et al. 2020), e.g. `Cnn14_mAP=0.431.pth`'s 'model' entry.
PANNS_CNN14 = [
    Rule(r'bn0', 'bn0'),
    Rule(r'conv_block(\d)\.(conv[12]|bn[12])', r'conv_block\1/\2'),
    Rule(r'fc1', 'fc1'),
    Rule(r'fc_audioset', 'fc_audioset'),
    # Fixed STFT / mel buffers of PANNs' front end: not weights; ser_jax.features computes
    # the same front end.
    Rule(r'(spectrogram_extractor|logmel_extractor)(\..*)?', None),
]

# The predecessor's CNN14 (global-average head) and CNN14 + U-attention.
PREDECESSOR_CNN14 = [
    Rule(r'conv_layer(\d)\.(conv[12]|bn[12])', r'conv_block\1/\2'),
    Rule(r'fc_layer\.0', 'fc_layer'),
    Rule(r'classifier', 'classifier'),
]
PREDECESSOR_CNN14_ATTN = PREDECESSOR_CNN14 + [
    Rule(r'attention\.dense', 'attention/dense'),
    Rule(r'attention', 'attention', kind='raw'),  # attention.u (1, C)
]

# The predecessor's CNN-X.
PREDECESSOR_CNNX = [
    Rule(r'conv([123])\.0', r'conv\1'),
    Rule(r'fc_layer([12])\.0', r'fc_layer\1'),
    Rule(r'fc_layer3', 'fc_layer3'),
]

# The predecessor's 1D CNN-LSTM.
PREDECESSOR_CNN_LSTM = [
    Rule(r'conv_layer([123])\.0', r'conv_layer\1'),
    Rule(r'LSTM', 'lstm', kind='lstm'),
    Rule(r'classifier', 'classifier'),
]

# torchvision ImageNet backbones, loaded into our models minus their new parts (stem,
# attention, classifier). The ImageNet heads are dropped on purpose (None rules): the models
# replace them. `features.N` keeps torchvision's Sequential index N in both models.
TORCHVISION_VGG19_BN = [
    Rule(r'features\.(\d+)', r'features_\1'),
    Rule(r'classifier\.\d+', None),  # ImageNet head 25088 -> 4096 -> 4096 -> 1000
]
TORCHVISION_ALEXNET = [
    Rule(r'features\.(\d+)', r'features_\1'),
    Rule(r'classifier\.\d+', None),  # ImageNet head 9216 -> 4096 -> 4096 -> 1000
]
TORCHVISION_RESNET18 = [
    # RGB conv1 (64, 3, 7, 7): our conv1 takes 1 channel and starts fresh, as the
    # predecessor's replacement conv1 did.
    Rule(r'conv1', None),
    Rule(r'bn1', 'bn1'),
    Rule(r'layer([1-4])\.([01])\.(conv[12]|bn[12])', r'layer\1_\2/\3'),
    Rule(r'layer([1-4])\.([01])\.downsample\.([01])', r'layer\1_\2/downsample_\3'),
    Rule(r'fc', None),  # ImageNet fc 512 -> 1000; ours is a new 512 -> 512
]

# The predecessor's VGG19 + Attn and AlexNet + Attn: `network.features.0` is the 1 -> 3 stem
# and `network.features.{N + 1}` is torchvision's features.N (a regex cannot subtract, so one
# rule per weighted index).
_VGG19_BN_CONVS = (0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49)
_ALEXNET_CONVS = (0, 3, 6, 8, 10)
_PREDECESSOR_ATTN_HEAD = [
    Rule(r'attention\.dense', 'attention/dense'),
    Rule(r'attention', 'attention', kind='raw'),  # attention.u (1, C)
    Rule(r'classifier', 'classifier'),
]
PREDECESSOR_VGG19_ATTN = ([Rule(r'network\.features\.0', 'stem')] +
                   [Rule(rf'network\.features\.{n + 1}', f'features_{n}')
                    for conv in _VGG19_BN_CONVS for n in (conv, conv + 1)] +  # conv, its BN
                   _PREDECESSOR_ATTN_HEAD)
PREDECESSOR_ALEXNET_ATTN = ([Rule(r'network\.features\.0', 'stem')] +
                     [Rule(rf'network\.features\.{n + 1}', f'features_{n}')
                      for n in _ALEXNET_CONVS] +
                     _PREDECESSOR_ATTN_HEAD)

# The predecessor's ResNet18: torchvision's resnet18 under `network.` with a 1-channel conv1
# and fc 512 -> 512, then `classifier`.
PREDECESSOR_RESNET18 = [
    Rule(r'network\.(conv1|bn1|fc)', r'\1'),
    Rule(r'network\.layer([1-4])\.([01])\.(conv[12]|bn[12])', r'layer\1_\2/\3'),
    Rule(r'network\.layer([1-4])\.([01])\.downsample\.([01])', r'layer\1_\2/downsample_\3'),
    Rule(r'classifier', 'classifier'),
]

# EfficientAT MobileNetV3 (`mn04_as_mAP_432.pt` and the other widths; a bare state_dict):
# torch Sequential indices become '_'-joined module names (ser_jax.models.efficientat).
EFFICIENTAT_MN = [
    Rule(r'features\.(\d+)\.0', r'features_\1/conv'),  # stem (0) and last conv (16)
    Rule(r'features\.(\d+)\.1', r'features_\1/bn'),
    Rule(r'features\.(\d+)\.block\.(\d)\.0', r'features_\1/block_\2/conv'),
    Rule(r'features\.(\d+)\.block\.(\d)\.1', r'features_\1/block_\2/bn'),
    Rule(r'features\.(\d+)\.block\.(\d)\.conc_se_layers\.(\d)\.(fc[12])',
         r'features_\1/block_\2/conc_se_layers_\3/\4'),
    Rule(r'classifier\.([25])', r'classifier_\1'),  # the "mlp" head's two Linear layers
]

SOURCES: dict[str, list[Rule]] = {
    'panns_cnn14': PANNS_CNN14,
    'predecessor_cnn14': PREDECESSOR_CNN14,
    'predecessor_cnn14_attn': PREDECESSOR_CNN14_ATTN,
    'predecessor_cnnx': PREDECESSOR_CNNX,
    'predecessor_cnn_lstm': PREDECESSOR_CNN_LSTM,
    'torchvision_vgg19_bn': TORCHVISION_VGG19_BN,
    'torchvision_alexnet': TORCHVISION_ALEXNET,
    'torchvision_resnet18': TORCHVISION_RESNET18,
    'predecessor_vgg19_attn': PREDECESSOR_VGG19_ATTN,
    'predecessor_alexnet_attn': PREDECESSOR_ALEXNET_ATTN,
    'predecessor_resnet18': PREDECESSOR_RESNET18,
    'efficientat_mn': EFFICIENTAT_MN,
}

# ---------------------------------------------------------------------------------------------
# Engine.

LSTM_GATES = ('i', 'f', 'g', 'o')  # PyTorch's row-block order in weight_ih / weight_hh.


def _auto_leaf(leaf, value):
  """Returns ((collection, name), array) for an 'auto' leaf, or None to drop it."""
  if leaf == 'num_batches_tracked':
    return None
  if leaf == 'weight':
    transposes = {4: (2, 3, 1, 0), 3: (2, 1, 0), 2: (1, 0)}
    if value.ndim in transposes:
      return ('params', 'kernel'), np.transpose(value, transposes[value.ndim])
    if value.ndim == 1:
      return ('params', 'scale'), value
  elif leaf == 'bias':
    return ('params', 'bias'), value
  elif leaf == 'running_mean':
    return ('batch_stats', 'mean'), value
  elif leaf == 'running_var':
    return ('batch_stats', 'var'), value
  raise KeyError(f'{leaf} with shape {value.shape}')


def _lstm_leaves(leaves):
  """Splits one single-layer unidirectional nn.LSTM into Flax LSTM-cell params.

  PyTorch: weight_ih_l0 (4H, in), weight_hh_l0 (4H, H), bias_ih_l0, bias_hh_l0 (4H,), rows in
  gate blocks i, f, g, o. Flax (`ser_jax.models.cnn_lstm.LSTM`, nn.LSTMCell's per-gate names
  plus PyTorch's second bias): per gate `i{gate}/{kernel (in, H), bias (H,)}` from the
  input-side rows and `h{gate}/{kernel (H, H), bias (H,)}` from the hidden-side rows.
  """
  expected = {'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'}
  if set(leaves) != expected:
    raise KeyError(f'LSTM leaves {sorted(leaves)}; expected exactly {sorted(expected)} '
                   '(one layer, one direction)')
  w_ih, w_hh = leaves['weight_ih_l0'], leaves['weight_hh_l0']
  hidden = w_hh.shape[1]
  if w_ih.shape[0] != 4 * hidden or w_hh.shape != (4 * hidden, hidden):
    raise KeyError(f'LSTM shapes weight_ih {w_ih.shape}, weight_hh {w_hh.shape}; '
                   'expected (4H, in) and (4H, H)')
  out = {}
  for k, gate in enumerate(LSTM_GATES):
    rows = slice(k * hidden, (k + 1) * hidden)
    out[('params', f'i{gate}', 'kernel')] = w_ih[rows].T
    out[('params', f'i{gate}', 'bias')] = leaves['bias_ih_l0'][rows]
    out[('params', f'h{gate}', 'kernel')] = w_hh[rows].T
    out[('params', f'h{gate}', 'bias')] = leaves['bias_hh_l0'][rows]
  return out


def _set(tree, path, value):
  node = tree
  for name in path[:-1]:
    node = node.setdefault(name, {})
    if not isinstance(node, dict):
      raise ValueError(f'convert: Flax path {"/".join(path)} runs through a leaf')
  node[path[-1]] = value


def _group_keys(state_dict, source, table):
  """Groups keys by (rule index, Flax module path), so multi-key kinds (LSTM) see all
  their leaves; returns (groups {key: {leaf: float32 copy}}, torch prefix per group)."""
  groups: dict[tuple[int, str], dict[str, np.ndarray]] = {}
  torch_prefix: dict[tuple[int, str], str] = {}
  unmatched = []
  for key, value in state_dict.items():
    prefix, _, leaf = key.rpartition('.')
    for index, rule in enumerate(table):
      if re.fullmatch(rule.pattern, prefix):
        break
    else:
      unmatched.append(key)
      continue
    if rule.target is None:
      continue  # dropped on purpose
    # Always a copy: the result must not alias the caller's arrays (torch's .numpy() shares
    # memory with the live module, whose BatchNorm buffers change in place).
    value = np.array(value)
    if np.issubdtype(value.dtype, np.floating):
      value = value.astype(np.float32, copy=False)
    module = re.sub(rule.pattern, rule.target, prefix)
    group = groups.setdefault((index, module), {})
    if leaf in group:
      raise ValueError(f'convert({source!r}): two keys map to {module}/{leaf}: '
                       f'{torch_prefix[(index, module)]}.{leaf} and {key}')
    group[leaf] = value
    torch_prefix[(index, module)] = prefix
  if unmatched:
    raise ValueError(f'convert({source!r}): {len(unmatched)} keys match no rule of the table: '
                     f'{sorted(unmatched)}')
  return groups, torch_prefix


def _convert_leaves(rule, leaves):
  """`{(collection, *name): array}` of one group; KeyError when a leaf does not fit."""
  if rule.kind == 'lstm':
    return _lstm_leaves(leaves)
  if rule.kind not in ('auto', 'raw'):
    raise ValueError(f'convert: rule {rule} has unknown kind {rule.kind!r}')
  converted = {}
  for leaf, value in leaves.items():
    mapped = (('params', leaf), value) if rule.kind == 'raw' else _auto_leaf(leaf, value)
    if mapped is not None:
      (collection, name), array = mapped
      converted[(collection, name)] = array
  return converted


def convert(state_dict, source):
  """Converts a flat PyTorch state_dict into Flax variables using `SOURCES[source]`.

  Args:
    state_dict: torch key -> array (numpy or anything `np.asarray` accepts).
    source: a key of `SOURCES`, e.g. 'panns_cnn14', 'predecessor_cnnx'.

  Returns:
    {'params': nested dict, 'batch_stats': nested dict} of numpy arrays (floating arrays as
    float32); 'batch_stats' is left out when the source has no BatchNorm, as in `model.init`.

  Raises:
    ValueError: unknown source; keys no rule explains; leaves a rule cannot convert; two keys
      mapping to one Flax path.
  """
  if source not in SOURCES:
    raise ValueError(f'convert: unknown source {source!r}; known: {", ".join(sorted(SOURCES))}')
  table = SOURCES[source]
  groups, torch_prefix = _group_keys(state_dict, source, table)
  variables: dict[str, Any] = {'params': {}, 'batch_stats': {}}
  origin: dict[tuple[str, ...], str] = {}
  bad = []
  for (index, module), leaves in groups.items():
    origin_of = f'{torch_prefix[(index, module)]}.*'
    try:
      converted = _convert_leaves(table[index], leaves)
    except KeyError as e:
      bad.append(f'{module}: {e.args[0]}')
      continue
    for (collection, *rest), array in converted.items():
      path = (collection, *module.split('/'), *rest)
      if path in origin:
        raise ValueError(f'convert({source!r}): two keys map to {"/".join(path)}: '
                         f'{origin[path]} and {origin_of}')
      origin[path] = origin_of
      _set(variables, path, np.ascontiguousarray(array))
  if bad:
    raise ValueError(f'convert({source!r}): leaves the table cannot convert: {bad}')
  if not variables['batch_stats']:
    del variables['batch_stats']
  return variables
