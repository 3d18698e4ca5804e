"""A PyTorch reference of PANNs' whole Cnn14, from the waveform on (torch only; tests use it).

PANNs' `Cnn14` computes its features inside the model with torchlibrosa modules whose fixed
buffers are saved in every PANNs checkpoint:
- `spectrogram_extractor.stft.conv_real.weight`, `...conv_imag.weight`:
  (n_fft // 2 + 1, 1, n_fft), a Conv1d STFT (Hann-windowed DFT rows, stride hop);
- `logmel_extractor.melW`: (n_fft // 2 + 1, n_mels), `librosa.filters.mel(...).T` (Slaney).
The STFT is centred with reflect padding, power 2, then 10 * log10(max(S, 1e-10)) (ref 1.0,
no top_db). `PannsCnn14Full` adds these modules to the part-A `PannsCnn14` so its
`state_dict()` has exactly the keys of `Cnn14_mAP=0.431.pth`'s `'model'` entry, and its
forward returns PANNs' outputs: `clipwise_output` (sigmoid) and `embedding` (ReLU of fc1).
Written from the torchlibrosa/PANNs facts in the project's reference notes, not copied.
"""
import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import torch_reference

# sample rate -> (n_fft = window, hop, n_mels, fmin, fmax) of the two PANNs CNN14 releases.
PANNS_FRONTENDS = {
    32000: (1024, 320, 64, 50.0, 14000.0),
    16000: (512, 160, 64, 50.0, 8000.0),
}


class ConvSTFT(nn.Module):
  """Centred STFT as two Conv1d (keys `conv_real.weight`, `conv_imag.weight`)."""

  def __init__(self, n_fft, hop_length):
    super().__init__()
    self.n_fft = n_fft
    bins = n_fft // 2 + 1
    self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
    self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
    # Rows of the DFT matrix times the periodic Hann window, computed in float64.
    window = librosa.filters.get_window('hann', n_fft, fftbins=True)
    phase = 2 * np.pi * np.outer(np.arange(bins), np.arange(n_fft)) / n_fft  # (bins, n_fft)
    with torch.no_grad():
      self.conv_real.weight.copy_(torch.from_numpy(np.cos(phase) * window)[:, None, :])
      self.conv_imag.weight.copy_(torch.from_numpy(-np.sin(phase) * window)[:, None, :])
    for p in self.parameters():
      p.requires_grad = False

  def forward(self, wave):  # (batch, samples)
    x = F.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode='reflect')
    real = self.conv_real(x).transpose(1, 2)[:, None]  # (batch, 1, frames, bins)
    imag = self.conv_imag(x).transpose(1, 2)[:, None]
    return real, imag


class Spectrogram(nn.Module):
  """Power spectrogram; holds the STFT under `stft` like torchlibrosa."""

  def __init__(self, n_fft, hop_length):
    super().__init__()
    self.stft = ConvSTFT(n_fft, hop_length)

  def forward(self, wave):
    real, imag = self.stft(wave)
    return real ** 2 + imag ** 2  # (batch, 1, frames, bins)


class LogmelFilterBank(nn.Module):
  """Slaney mel matrix `melW` (bins, n_mels) and 10 * log10(max(S, 1e-10))."""

  def __init__(self, sample_rate, n_fft, n_mels, fmin, fmax):
    super().__init__()
    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                              fmax=fmax).T  # (bins, n_mels)
    self.melW = nn.Parameter(torch.from_numpy(mel.astype(np.float32)), requires_grad=False)

  def forward(self, power):
    mel = power @ self.melW  # (batch, 1, frames, n_mels)
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


class PannsCnn14Full(torch_reference.PannsCnn14):
  """PANNs Cnn14 with its front end; input (batch, samples) at `sample_rate`."""

  def __init__(self, sample_rate=32000, classes_num=527):
    n_fft, hop, n_mels, fmin, fmax = PANNS_FRONTENDS[sample_rate]
    super().__init__(classes_num=classes_num, mel_bins=n_mels)
    self.spectrogram_extractor = Spectrogram(n_fft, hop)
    self.logmel_extractor = LogmelFilterBank(sample_rate, n_fft, n_mels, fmin, fmax)

  def log_mel(self, wave):
    """(batch, samples) -> (batch, 1, frames, n_mels): PANNs' layout."""
    return self.logmel_extractor(self.spectrogram_extractor(wave))

  def forward(self, wave):
    captured = {}
    hook = self.fc1.register_forward_hook(lambda m, i, out: captured.update(fc1=out))
    try:
      logits = super().forward(self.log_mel(wave))
    finally:
      hook.remove()
    return {'clipwise_output': torch.sigmoid(logits),
            'embedding': F.relu(captured['fc1'])}


def panns_checkpoint(model):
  """The dict PANNs releases: the state_dict under 'model', next to training state."""
  return {'iteration': 660000, 'model': model.state_dict()}


def frontend_buffers(sample_rate):
  """Just the fixed front-end buffers of a PANNs checkpoint at `sample_rate`."""
  n_fft, hop, n_mels, fmin, fmax = PANNS_FRONTENDS[sample_rate]
  spec = Spectrogram(n_fft, hop)
  mel = LogmelFilterBank(sample_rate, n_fft, n_mels, fmin, fmax)
  out = {f'spectrogram_extractor.{k}': v for k, v in spec.state_dict().items()}
  out.update({f'logmel_extractor.{k}': v for k, v in mel.state_dict().items()})
  return out
