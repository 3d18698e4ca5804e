"""A PyTorch reference of EfficientAT's MobileNetV3 and its eval-mode front end (torch only).

Written from the EfficientAT facts in the project's reference notes, not copied: the module
tree reproduces the checkpoint's key layout (`features.0.{0,1}`, `features.{1..15}.block.{j}`,
`...conc_se_layers.0.fc{1,2}`, `features.16.{0,1}`, `classifier.{2,5}`), so
`mn04_as_mAP_432.pt` loads into `MobileNetV3(width_mult=0.4)` with `strict=True`.

- `MobileNetV3(width_mult, num_classes)`: input (batch, 1, mel, time); `forward` returns
  (logits, embedding), the embedding being the mean over (mel, time) of `features`' output.
- `MelFrontEnd()`: waveform (batch, samples) at 32 kHz -> (batch, 1, 128, frames): pre-emphasis
  by conv1d with kernel [-0.97, 1], `torch.stft` (n_fft 1024, hop 320, win_length 800,
  symmetric Hann, centred, reflect), power, Kaldi's mel bank computed with torch float32
  arithmetic (as torchaudio's `get_mel_banks` does) and padded to 513 bins, ln(x + 1e-5),
  (x + 4.5) / 5.
"""
import math

import torch
from torch import nn


def make_divisible(value, divisor=8):
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


# (input, kernel, expanded, output, SE, activation, stride) of MobileNetV3-Large.
BLOCKS = [
    (16, 3, 16, 16, False, 'RE', 1), (16, 3, 64, 24, False, 'RE', 2),
    (24, 3, 72, 24, False, 'RE', 1), (24, 5, 72, 40, True, 'RE', 2),
    (40, 5, 120, 40, True, 'RE', 1), (40, 5, 120, 40, True, 'RE', 1),
    (40, 3, 240, 80, False, 'HS', 2), (80, 3, 200, 80, False, 'HS', 1),
    (80, 3, 184, 80, False, 'HS', 1), (80, 3, 184, 80, False, 'HS', 1),
    (80, 3, 480, 112, True, 'HS', 1), (112, 3, 672, 112, True, 'HS', 1),
    (112, 5, 672, 160, True, 'HS', 2), (160, 5, 960, 160, True, 'HS', 1),
    (160, 5, 960, 160, True, 'HS', 1),
]


def conv_bn_act(in_ch, out_ch, kernel=1, stride=1, groups=1, act=None):
  """Sequential(conv, BN[, act]): keys `.0.weight`, `.1.*`."""
  layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01)]
  if act == 'RE':
    layers.append(nn.ReLU())
  elif act == 'HS':
    layers.append(nn.Hardswish())
  return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):

  def __init__(self, channels, squeeze):
    super().__init__()
    self.fc1 = nn.Linear(channels, squeeze)
    self.fc2 = nn.Linear(squeeze, channels)

  def forward(self, x):  # (batch, C, mel, time)
    s = x.mean(dim=(2, 3))
    s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
    return x * s[:, :, None, None]


class ConcurrentSE(nn.Module):
  """Channel-only concurrent SE: the max over one SE is that SE."""

  def __init__(self, channels):
    super().__init__()
    self.conc_se_layers = nn.ModuleList(
        [SqueezeExcitation(channels, make_divisible(channels // 4))])

  def forward(self, x):
    return torch.stack([se(x) for se in self.conc_se_layers]).max(dim=0).values


class InvertedResidual(nn.Module):

  def __init__(self, in_ch, kernel, expanded, out_ch, se, act, stride):
    super().__init__()
    layers = []
    if expanded != in_ch:
      layers.append(conv_bn_act(in_ch, expanded, act=act))
    layers.append(conv_bn_act(expanded, expanded, kernel, stride, groups=expanded, act=act))
    if se:
      layers.append(ConcurrentSE(expanded))
    layers.append(conv_bn_act(expanded, out_ch))
    self.block = nn.Sequential(*layers)
    self.residual = stride == 1 and in_ch == out_ch

  def forward(self, x):
    y = self.block(x)
    return y + x if self.residual else y


class MobileNetV3(nn.Module):

  def __init__(self, width_mult=0.4, num_classes=527):
    super().__init__()
    c = lambda n: make_divisible(n * width_mult)
    layers = [conv_bn_act(1, c(16), 3, 2, act='HS')]
    for in_ch, kernel, expanded, out_ch, se, act, stride in BLOCKS:
      layers.append(InvertedResidual(c(in_ch), kernel, c(expanded), c(out_ch), se, act,
                                     stride))
    last = 6 * c(160)
    layers.append(conv_bn_act(c(160), last, act='HS'))
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, c(1280)), nn.Hardswish(),
        nn.Dropout(0.2), nn.Linear(c(1280), num_classes))

  def forward(self, x):  # (batch, 1, mel, time)
    x = self.features(x)
    return self.classifier(x), x.mean(dim=(2, 3))


def kaldi_mel_banks(num_bins=128, n_fft=1024, sample_rate=32000, fmin=0.0, fmax=15000.0):
  """torchaudio.compliance.kaldi.get_mel_banks (no VTLN), (num_bins, n_fft // 2), float32."""
  mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)
  lo, hi = mel(fmin), mel(fmax)
  delta = (hi - lo) / (num_bins + 1)
  b = torch.arange(num_bins).unsqueeze(1)
  left, center, right = lo + b * delta, lo + (b + 1.0) * delta, lo + (b + 2.0) * delta
  freqs = sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float32)
  m = (1127.0 * torch.log(1.0 + freqs / 700.0)).unsqueeze(0)
  up = (m - left) / (center - left)
  down = (right - m) / (right - center)
  return torch.max(torch.zeros(1), torch.min(up, down))


class MelFrontEnd(nn.Module):
  """EfficientAT's AugmentMelSTFT in eval mode (no randomised fmin/fmax, no masking)."""

  def __init__(self):
    super().__init__()
    self.register_buffer('window', torch.hann_window(800, periodic=False), persistent=False)
    self.register_buffer('preemphasis', torch.tensor([[[-0.97, 1.0]]]), persistent=False)
    bank = torch.nn.functional.pad(kaldi_mel_banks(), (0, 1))  # (128, 513)
    self.register_buffer('mel_basis', bank, persistent=False)

  def forward(self, wave):  # (batch, samples)
    x = torch.nn.functional.conv1d(wave[:, None], self.preemphasis)[:, 0]
    spec = torch.stft(x, 1024, hop_length=320, win_length=800, window=self.window,
                      center=True, pad_mode='reflect', normalized=False, return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2  # (batch, 513, frames)
    mel = torch.matmul(self.mel_basis, power)  # (batch, 128, frames)
    return ((mel + 1e-5).log() + 4.5)[:, None] / 5.0  # (batch, 1, 128, frames)


# The registry-name protocol of tests/torch_reference.py (`REFERENCES`, `torch_reference`,
# `to_torch_input`; name -> (constructor, converter source)), for bench/models.py; the widths
# are those of ser_jax.models.efficientat.WIDTHS.
WIDTHS = {f'efficientat_mn{round(10 * w):02d}': w
          for w in (0.1, 0.2, 0.4, 0.5, 1.0, 2.0, 3.0, 4.0)}


class Classifier(MobileNetV3):
  """`MobileNetV3` whose forward returns the logits only, as a classifier's does."""

  def forward(self, x):
    return super().forward(x)[0]


REFERENCES = {name: (lambda num_classes, w=w: Classifier(w, num_classes), 'efficientat_mn')
              for name, w in WIDTHS.items()}


def torch_reference(name, num_classes=8, **kwargs):
  """The reference of registry model `name` (e.g. 'efficientat_mn04'), logits only."""
  return REFERENCES[name][0](num_classes, **kwargs)


def to_torch_input(name, x):
  """Flax input (batch, mel, time, 1) -> torch (batch, 1, mel, time)."""
  del name
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
