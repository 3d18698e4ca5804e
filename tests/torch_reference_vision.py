"""PyTorch reference modules for the ImageNet-transfer models (torch only, no torchvision).

Two layouts are built here, written from torchvision's published architectures:
- torchvision's own backbones, with exactly torchvision's state_dict keys
  (`features.N.*`, `classifier.N.*` for vgg19_bn and alexnet; `conv1`, `bn1`,
  `layerK.M.{conv,bn}J`, `layerK.M.downsample.{0,1}`, `fc` for resnet18), so the
  `torchvision_*` rename tables in `ser_jax/convert.py` are tested against real key names;
- the predecessor's wrappers (`network.*`, `attention.dense`, `attention.u`, `classifier`),
  which are the numerical references for `ser_jax.models.{vgg,alexnet,resnet}`.

Same helper API as tests/torch_reference.py (the audio models), so `bench/models.py` can use
either: `torch_reference(name, num_classes)` (predecessor layout, for registry names
`vgg19_attn`, `alexnet_attn`, `resnet18`), `convert_source(name)`, `to_torch_input(name, x)`,
`randomize(module, seed)`, `state_dict_numpy(module)`; `TORCHVISION[source]()` builds the
torchvision backbone for a `torchvision_*` source.
"""
import numpy as np
import torch
from torch import nn

from torch_reference import UAttention  # the predecessor's attention, shared by every "+ Attn" model

# torchvision's VGG configuration "E" (vgg19): channel widths, "M" is a 2x2 max-pool.
VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
             512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M')


def vgg19_bn_features():
  """torchvision `vgg19_bn().features`: conv3x3 p1 -> BN -> ReLU, max-pools 2x2."""
  layers = []
  in_ch = 3
  for v in VGG19_CFG:
    if v == 'M':
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1),
                 nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
      in_ch = v
  return nn.Sequential(*layers)


def alexnet_features():
  """torchvision `alexnet().features` (indices: conv 0, 3, 6, 8, 10; pools 2, 5, 12)."""
  return nn.Sequential(
      nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(64, 192, kernel_size=5, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(192, 384, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
  )


class TorchvisionVGG19BN(nn.Module):
  """torchvision `vgg19_bn` key layout. `hidden` shrinks the (unused) ImageNet classifier

  so tests need not allocate its 120M parameters; its keys stay torchvision's.
  """

  def __init__(self, num_classes=1000, hidden=4096):
    super().__init__()
    self.features = vgg19_bn_features()
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, num_classes))

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


class TorchvisionAlexNet(nn.Module):
  """torchvision `alexnet` key layout (`classifier.{1,4,6}`); `hidden` as for VGG."""

  def __init__(self, num_classes=1000, hidden=4096):
    super().__init__()
    self.features = alexnet_features()
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(256 * 6 * 6, hidden), nn.ReLU(True),
        nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(True),
        nn.Linear(hidden, num_classes))

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
  """torchvision's ResNet BasicBlock: two conv3x3 + BN, identity or 1x1-conv shortcut."""

  def __init__(self, in_ch, out_ch, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_ch)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_ch)
    self.downsample = None
    if stride != 1 or in_ch != out_ch:
      self.downsample = nn.Sequential(
          nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class TorchvisionResNet18(nn.Module):
  """torchvision `resnet18` key layout; `in_channels`/`fc_out` allow the predecessor's swaps."""

  def __init__(self, num_classes=1000, in_channels=3):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    widths = (64, 128, 256, 512)
    in_ch = 64
    for k, w in enumerate(widths, start=1):
      stride = 1 if k == 1 else 2
      setattr(self, f'layer{k}', nn.Sequential(BasicBlock(in_ch, w, stride),
                                               BasicBlock(w, w, 1)))
      in_ch = w
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = torch.flatten(self.avgpool(x), 1)
    return self.fc(x)


class _Features(nn.Module):
  """Holds `features` so keys read `network.features.N.*` like the predecessor's."""

  def __init__(self, features):
    super().__init__()
    self.features = features


def _stem():
  # The learned 1 -> 3 channel conv that lets a 1-channel spectrogram enter an ImageNet net.
  return nn.Conv2d(1, 3, kernel_size=3, padding=1)


class PredecessorVGG19Attn(nn.Module):
  """Predecessor's VGG19-BN + attention: `network.features.0` stem, then vgg19_bn features."""

  def __init__(self, num_classes=8):
    super().__init__()
    self.network = _Features(nn.Sequential(_stem(), *vgg19_bn_features()))
    self.attention = UAttention(512)
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    return self.classifier(self.attention(self.network.features(x)))


class PredecessorAlexNetAttn(nn.Module):
  """Predecessor's AlexNet + attention: `network.features.0` stem, then alexnet features."""

  def __init__(self, num_classes=8):
    super().__init__()
    self.network = _Features(nn.Sequential(_stem(), *alexnet_features()))
    self.attention = UAttention(256)
    self.classifier = nn.Linear(256, num_classes)

  def forward(self, x):
    return self.classifier(self.attention(self.network.features(x)))


class PredecessorResNet18(nn.Module):
  """Predecessor's ResNet18: 1-channel conv1, `network.fc` 512 -> 512, `classifier`.

  A ReLU between `network.fc` and `classifier` is an assumption (the state_dict cannot show
  it); `fc_relu` must match `ser_jax.models.resnet.ResNet18.fc_relu`.
  """

  def __init__(self, num_classes=8, fc_relu=True):
    super().__init__()
    self.network = TorchvisionResNet18(num_classes=512, in_channels=1)
    self.classifier = nn.Linear(512, num_classes)
    self.fc_relu = fc_relu

  def forward(self, x):
    x = self.network(x)
    if self.fc_relu:
      x = torch.relu(x)
    return self.classifier(x)


# name -> (constructor of the predecessor-layout module, `ser_jax.convert` source)
REFERENCES = {
    'vgg19_attn': (PredecessorVGG19Attn, 'predecessor_vgg19_attn'),
    'alexnet_attn': (PredecessorAlexNetAttn, 'predecessor_alexnet_attn'),
    'resnet18': (PredecessorResNet18, 'predecessor_resnet18'),
}
# torchvision source name -> its ImageNet backbone (small `hidden` where the head is unused)
TORCHVISION = {
    'torchvision_vgg19_bn': lambda: TorchvisionVGG19BN(hidden=8),
    'torchvision_alexnet': lambda: TorchvisionAlexNet(hidden=8),
    'torchvision_resnet18': TorchvisionResNet18,
}


def torch_reference(name, num_classes=8):
  """The predecessor-layout torch module for a registry name (input NCHW, 1 channel)."""
  if name not in REFERENCES:
    raise ValueError(f'tests/torch_reference_vision.py: no torch reference for {name!r}; '
                     f'known: {sorted(REFERENCES)}')
  return REFERENCES[name][0](num_classes=num_classes)


def convert_source(name):
  """The `ser_jax.convert` source that reads `torch_reference(name)`'s state_dict."""
  return REFERENCES[name][1]


def to_torch_input(name, x):
  """Flax input (batch, mel, time, 1) -> torch's (batch, 1, mel, time) tensor."""
  del name  # every vision model reads the spectrogram as a 1-channel image
  x = np.asarray(x, np.float32).transpose(0, 3, 1, 2)
  return torch.from_numpy(np.ascontiguousarray(x))


def randomize(module, seed=0):
  """Random weights and BatchNorm running statistics (fresh ones are 1 / 0), so converting

  both is tested. Weights ~ N(0, 1 / fan_in) keep activations O(1) through 16+ layers.
  """
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in module.state_dict().items():
      leaf = name.rpartition('.')[2]
      if leaf == 'num_batches_tracked':
        continue
      if leaf == 'running_var':
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
      elif leaf == 'running_mean':
        tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
      elif leaf == 'weight' and tensor.ndim == 1:  # BatchNorm scale
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
      else:
        fan_in = int(np.prod(tensor.shape[1:])) if tensor.ndim > 1 else tensor.numel()
        tensor.copy_(torch.randn(tensor.shape, generator=gen) / np.sqrt(max(fan_in, 1)))
  return module


def state_dict_numpy(module):
  """state_dict as {key: np.ndarray}, the form `ser_jax.convert.convert` takes."""
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
