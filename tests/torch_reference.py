"""PyTorch reference modules for the audio models (torch only), with the real key layouts.

Each module's `state_dict()` keys are exactly those of the checkpoints users import
(see ../shared/REFERENCE.md), so the `ser_jax.convert` tables are tested on real names:
- `PannsCnn14`: PANNs `Cnn14` after its front end: `bn0`, `conv_block{1..6}`, `fc1`,
  `fc_audioset` (the fixed front-end buffers are not modelled here).
- `PredecessorCnn14`: the predecessor's CNN14: `conv_layer{1..6}`, `fc_layer.0`, `classifier`, and
  with `attention=True` also `attention.dense`, `attention.u`.
- `PredecessorCnnX`: `conv{1,2,3}.0`, `fc_layer{1,2}.0`, `fc_layer3`.
- `PredecessorCnnLstm`: `conv_layer{1,2,3}.0`, `LSTM`, `classifier`.

Input layouts (the Flax models all take (batch, mel, time, 1)):
| module             | torch input            | from a Flax input x                 |
|--------------------|------------------------|-------------------------------------|
| PannsCnn14         | (batch, 1, time, mel)  | x.transpose(0, 3, 2, 1)             |
| PredecessorCnn14   | (batch, 1, mel, time)  | x.transpose(0, 3, 1, 2)             |
| PredecessorCnnX    | (batch, 1, mel, time)  | x.transpose(0, 3, 1, 2)             |
| PredecessorCnnLstm | (batch, mel, time)     | x[..., 0]                           |
`to_torch_input(name, x)` applies the right one. All modules return logits (PANNs' own
forward applies a sigmoid for AudioSet; the logits are what a fine-tuned head needs).
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CNN14_WIDTHS = (64, 128, 256, 512, 1024, 2048)


class ConvBlock(nn.Module):
  """conv3x3 (no bias) -> BN -> ReLU, twice; keys conv1, bn1, conv2, bn2."""

  def __init__(self, in_ch, out_ch):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_ch)
    self.bn2 = nn.BatchNorm2d(out_ch)

  def forward(self, x, pool=(2, 2)):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.bn2(self.conv2(x)))
    if pool != (1, 1):
      x = F.avg_pool2d(x, kernel_size=pool)
    return x


class PannsCnn14(nn.Module):
  """PANNs Cnn14 from the log-mel on: input (batch, 1, time, mel), logits out."""

  def __init__(self, classes_num=527, mel_bins=64, widths=CNN14_WIDTHS):
    super().__init__()
    self.bn0 = nn.BatchNorm2d(mel_bins)
    in_ch = 1
    for i, width in enumerate(widths, start=1):
      setattr(self, f'conv_block{i}', ConvBlock(in_ch, width))
      in_ch = width
    self.fc1 = nn.Linear(in_ch, in_ch)
    self.fc_audioset = nn.Linear(in_ch, classes_num)

  def forward(self, x):
    x = x.transpose(1, 3)  # (batch, mel, time, 1): bn0 normalises each mel bin
    x = self.bn0(x)
    x = x.transpose(1, 3)  # (batch, 1, time, mel)
    for i in range(1, 7):
      # PANNs pools 2x2 in blocks 1-5 and not at all in block 6.
      x = getattr(self, f'conv_block{i}')(x, pool=(2, 2) if i < 6 else (1, 1))
      x = F.dropout(x, p=0.2, training=self.training)
    x = x.mean(dim=3)  # (batch, 2048, time')
    x = x.max(dim=2).values + x.mean(dim=2)
    x = F.dropout(x, p=0.5, training=self.training)
    x = F.relu(self.fc1(x))
    return self.fc_audioset(x)


class UAttention(nn.Module):
  """The predecessor's U-vector attention: keys `dense.*`, `u` (1, C)."""

  def __init__(self, channels, lambda_=0.3):
    super().__init__()
    self.lambda_ = lambda_
    self.dense = nn.Linear(channels, channels)
    self.u = nn.Parameter(torch.empty(1, channels))
    nn.init.xavier_uniform_(self.u)

  def forward(self, x):  # (batch, C, F, T)
    x = x.flatten(2).transpose(1, 2)  # (batch, F*T, C)
    e = torch.tanh(self.dense(x)) @ self.u.t()  # (batch, F*T, 1)
    alpha = torch.softmax(self.lambda_ * e, dim=1)
    return (alpha * x).sum(dim=1)  # (batch, C)


class PredecessorCnn14(nn.Module):
  """The predecessor's CNN14: input (batch, 1, mel, time); 2x2 average pool in all 6 blocks."""

  def __init__(self, num_classes=8, attention=False, widths=CNN14_WIDTHS):
    super().__init__()
    in_ch = 1
    for i, width in enumerate(widths, start=1):
      setattr(self, f'conv_layer{i}', ConvBlock(in_ch, width))
      in_ch = width
    self.attention = UAttention(in_ch) if attention else None
    self.fc_layer = nn.Sequential(nn.Linear(in_ch, 512), nn.ReLU())
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    for i in range(1, 7):
      x = getattr(self, f'conv_layer{i}')(x)
      x = F.dropout(x, p=0.1, training=self.training)
    x = self.attention(x) if self.attention is not None else x.mean(dim=(2, 3))
    return self.classifier(self.fc_layer(x))


class PredecessorCnnX(nn.Module):
  """The predecessor's CNN-X: input (batch, 1, mel, time); 128 x 256 for the 13440 flatten."""

  def __init__(self, num_classes=8, flat_features=32 * 14 * 30):
    super().__init__()
    for i, (cin, cout) in enumerate(((1, 8), (8, 16), (16, 32)), start=1):
      setattr(self, f'conv{i}', nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(),
                                              nn.AvgPool2d(2)))
    self.fc_layer1 = nn.Sequential(nn.Linear(flat_features, 2048), nn.ReLU())
    self.fc_layer2 = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU())
    self.fc_layer3 = nn.Linear(2048, num_classes)

  def forward(self, x):
    x = self.conv3(self.conv2(self.conv1(x)))
    x = x.flatten(1)  # C, H, W order
    return self.fc_layer3(self.fc_layer2(self.fc_layer1(x)))


class PredecessorCnnLstm(nn.Module):
  """The predecessor's 1D CNN-LSTM: input (batch, mel, time), mel bins as channels."""

  def __init__(self, num_classes=8, n_mels=128):
    super().__init__()
    self.conv_layer1 = nn.Sequential(nn.Conv1d(n_mels, 64, 3), nn.ReLU(), nn.MaxPool1d(2))
    self.conv_layer2 = nn.Sequential(nn.Conv1d(64, 128, 3), nn.ReLU(), nn.MaxPool1d(2))
    self.conv_layer3 = nn.Sequential(nn.Conv1d(128, 256, 3), nn.ReLU())
    self.LSTM = nn.LSTM(256, 256, batch_first=True)
    self.classifier = nn.Linear(256, num_classes)

  def forward(self, x):
    x = self.conv_layer3(self.conv_layer2(self.conv_layer1(x)))  # (batch, 256, time')
    _, (h_n, _) = self.LSTM(x.transpose(1, 2))
    return self.classifier(h_n[-1])


# Registry name -> (constructor, convert source). Constructors take num_classes and the
# model's extra keyword arguments (CNN14's `widths`, for small test variants).
REFERENCES = {
    'cnn14': (lambda num_classes, **kw: PredecessorCnn14(num_classes, **kw), 'predecessor_cnn14'),
    'cnn14_attn': (lambda num_classes, **kw: PredecessorCnn14(num_classes, attention=True, **kw),
                   'predecessor_cnn14_attn'),
    'cnn14_panns': (lambda num_classes, **kw: PannsCnn14(num_classes, **kw), 'panns_cnn14'),
    'cnnx': (lambda num_classes: PredecessorCnnX(num_classes), 'predecessor_cnnx'),
    'cnn_lstm': (lambda num_classes: PredecessorCnnLstm(num_classes), 'predecessor_cnn_lstm'),
}


def torch_reference(name, num_classes=8, **kwargs):
  """The predecessor-layout (or PANNs) torch module for a registry name."""
  return REFERENCES[name][0](num_classes, **kwargs)


def convert_source(name):
  """The `ser_jax.convert` source that reads `torch_reference(name)`'s state_dict."""
  return REFERENCES[name][1]


def to_torch_input(name, x):
  """Flax input (batch, mel, time, 1) -> the torch reference's input layout (a tensor)."""
  x = np.asarray(x, np.float32)
  if name == 'cnn14_panns':
    x = x.transpose(0, 3, 2, 1)  # (batch, 1, time, mel)
  elif name == 'cnn_lstm':
    x = x[..., 0]  # (batch, mel, time)
  else:
    x = x.transpose(0, 3, 1, 2)  # (batch, 1, mel, time)
  return torch.from_numpy(np.ascontiguousarray(x))


def randomize(module, seed=0):
  """Random weights *and* BatchNorm running statistics, so conversion of both is tested."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in module.state_dict().items():
      if name.endswith('num_batches_tracked'):
        continue
      if name.endswith('running_var'):
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
      elif name.endswith('running_mean'):
        tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
      elif name.split('.')[-1] == 'weight' and tensor.ndim == 1:  # BN scale
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
      else:
        fan_in = max(int(np.prod(tensor.shape[1:])), 1) if tensor.ndim > 1 else tensor.numel()
        tensor.copy_(torch.randn(tensor.shape, generator=gen) / np.sqrt(fan_in))
  return module


def state_dict_numpy(module):
  """state_dict as {key: np.ndarray}, the form `ser_jax.convert.convert` takes."""
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
