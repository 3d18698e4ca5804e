"""Tests for ser_jax.features: front ends match librosa; audio loading conversions."""
import dataclasses
import logging
import math

import numpy as np
import pytest
import soundfile as sf

from ser_jax import features


def _librosa_log_mel(y, fe):
  import librosa
  s = librosa.feature.melspectrogram(
      y=y, sr=fe.sample_rate, n_fft=fe.n_fft, win_length=fe.win_length,
      hop_length=fe.hop_length, n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax,
      pad_mode=fe.pad_mode)
  return librosa.power_to_db(s, ref=np.max if fe.ref == "max" else 1.0,
                             amin=fe.amin, top_db=fe.top_db)


def _noisy_tone(sr, seconds=0.7, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(sr * seconds)) / sr
  env = np.minimum(1.0, 5 * t)  # a fade-in so dB values span a wide range
  return (0.3 * env * np.sin(2 * np.pi * 440 * t)
          + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def test_frontend_table():
  assert set(features.FRONTENDS) == {"predecessor48k", "panns32k", "panns16k", "efficientat32k"}
  s = features.FRONTENDS["predecessor48k"]
  assert (s.sample_rate, s.n_fft, s.win_length, s.hop_length, s.n_mels) == (
      48000, 2048, 1920, 480, 128)
  assert (s.ref, s.top_db) == ("max", 80.0)
  p = features.FRONTENDS["panns32k"]
  assert (p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.fmin, p.fmax) == (
      32000, 1024, 320, 64, 50.0, 14000.0)
  q = features.FRONTENDS["panns16k"]
  assert (q.sample_rate, q.n_fft, q.hop_length, q.n_mels, q.fmin, q.fmax) == (
      16000, 512, 160, 64, 50.0, 8000.0)
  assert p.top_db is None and q.top_db is None and p.amin == 1e-10
  e = features.FRONTENDS["efficientat32k"]
  assert (e.sample_rate, e.n_fft, e.win_length, e.hop_length, e.n_mels, e.fmin, e.fmax) == (
      32000, 1024, 800, 320, 128, 0.0, 15000.0)
  assert (e.preemphasis, e.periodic_window, e.mel_scale, e.log) == (0.97, False, "kaldi", "ln")
  assert (e.amin, e.log_shift, e.log_scale) == (1e-5, 4.5, 5.0)
  with pytest.raises(ValueError, match="known"):
    features.get_frontend("nope")
  with pytest.raises(ValueError, match="bad: log must be one of"):
    dataclasses.replace(e, name="bad", log="log10")
  with pytest.raises(ValueError, match="bad: log 'ln' takes no ref or top_db"):
    dataclasses.replace(e, name="bad", top_db=80.0)


@pytest.mark.parametrize("name", ["predecessor48k", "panns32k", "panns16k"])
def test_log_mel_matches_librosa(name):
  fe = features.FRONTENDS[name]
  y = _noisy_tone(fe.sample_rate)
  ours = features.log_mel(y, fe)
  ref = _librosa_log_mel(y, fe)
  assert ours.dtype == np.float32
  assert ours.shape == ref.shape == (fe.n_mels, fe.num_frames(len(y)))
  assert np.abs(ours - ref).max() <= 0.01
  if fe.top_db is not None:
    assert abs(ours.max()) < 1e-4 and ours.min() >= ours.max() - 80.0


def test_log_mel_by_name_and_rejects_2d():
  y = _noisy_tone(16000, 0.2)
  np.testing.assert_array_equal(features.log_mel(y, "panns16k"),
                                features.log_mel(y, features.FRONTENDS["panns16k"]))
  with pytest.raises(ValueError, match="1-D"):
    features.log_mel(np.stack([y, y]), "panns16k")


def test_load_audio_downmix_and_resample(tmp_path, caplog):
  left = _noisy_tone(44100, 0.5, seed=1)
  right = _noisy_tone(44100, 0.5, seed=2)
  path = tmp_path / "stereo.wav"
  sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
  with caplog.at_level(logging.INFO, logger="ser_jax.features"):
    y = features.load_audio(path, 48000)
  assert y.dtype == np.float32 and y.ndim == 1
  assert abs(len(y) - len(left) * 48000 / 44100) <= 1
  assert "downmixed 2 channels" in caplog.text
  assert "resampled 44100 Hz to 48000 Hz" in caplog.text
  import librosa
  want, _ = librosa.load(path, sr=48000)  # librosa's own mono + resample
  np.testing.assert_allclose(y, want, atol=1e-6)


def test_load_audio_native_rate_is_exact(tmp_path):
  y = _noisy_tone(16000, 0.3)
  path = tmp_path / "x.wav"
  sf.write(path, y, 16000, subtype="PCM_16")
  got = features.load_audio(path, 16000)
  np.testing.assert_array_equal(got, sf.read(path, dtype="float32")[0])


def test_load_audio_undecodable(tmp_path):
  path = tmp_path / "broken.wav"
  path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
  with pytest.raises(features.AudioDecodeError, match="broken.wav.*cannot decode"):
    features.load_audio(path, 48000)


@pytest.mark.parametrize("name", ["predecessor48k", "panns32k", "panns16k"])
def test_mel_filterbank_equals_librosa(name):
  import librosa
  fe = features.FRONTENDS[name]
  want = librosa.filters.mel(sr=fe.sample_rate, n_fft=fe.n_fft, n_mels=fe.n_mels,
                             fmin=fe.fmin, fmax=fe.fmax)
  got = features.mel_filterbank(fe)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------
# EfficientAT's front end: Kaldi mel bank, pre-emphasis, symmetric window, ln scale.


def _kaldi_bank_by_formula(n_mels, n_fft, sr, fmin, fmax):
  """Kaldi's get_mel_banks written out one filter and one bin at a time (float64)."""
  mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)
  step = (mel(fmax) - mel(fmin)) / (n_mels + 1)
  bank = np.zeros((n_mels, n_fft // 2 + 1))
  for m in range(n_mels):
    left, centre, right = (mel(fmin) + (m + i) * step for i in range(3))
    for k in range(n_fft // 2):  # Kaldi stops below Nyquist; the last column stays 0
      x = mel(k * sr / n_fft)
      if left < x <= centre:
        bank[m, k] = (x - left) / (centre - left)
      elif centre < x < right:
        bank[m, k] = (right - x) / (right - centre)
  return bank


def test_kaldi_mel_filterbank_equals_the_formula():
  fe = features.FRONTENDS["efficientat32k"]
  got = features.mel_filterbank(fe)
  want = _kaldi_bank_by_formula(128, 1024, 32000, 0.0, 15000.0)
  assert got.dtype == np.float32 and got.shape == (128, 513)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  assert not got[:, -1].any()  # the padded Nyquist column
  # Triangles of height <= 1 (not area-normalised); every filter sees some bin (the
  # lowest ones, narrower than a bin, only part of their peak).
  assert got.max() <= 1.0 and (got.max(axis=1) > 0.15).all()
  # 15 kHz is bin 480: nothing above it.
  assert not got[:, 481:].any() and got[:, 479].any()


def test_efficientat_window_and_preemphasis():
  fe = features.FRONTENDS["efficientat32k"]
  w = features._window(fe)  # pylint: disable=protected-access
  assert w.shape == (1024,)
  assert not w[:112].any() and not w[912:].any()  # 800 centred in 1024
  np.testing.assert_allclose(w[112:912], np.hanning(800), atol=1e-7)  # symmetric Hann
  # Pre-emphasis is 'valid': one frame fewer when the length is 1 mod hop.
  assert fe.num_frames(320 * 10 + 1) == 11 and fe.num_frames(320 * 10) == 10
  assert fe.min_samples == 514
  with pytest.raises(ValueError, match="too short for front end efficientat32k"):
    features.log_mel(np.zeros(513, np.float32), fe)


def test_efficientat_log_mel_matches_torch_reference(ravdess_mini):
  """Waveform -> log-mel equals EfficientAT's torch.stft-based front end (float32 noise)."""
  torch = pytest.importorskip("torch")
  import torch_reference_efficientat as tre  # pylint: disable=g-import-not-at-top
  fe = features.FRONTENDS["efficientat32k"]
  clips = [features.load_audio(sorted(ravdess_mini.glob(f"Actor_0{a}/*.wav"))[7], 32000)
           for a in (1, 4)]
  clips.append(_noisy_tone(32000, 0.3))  # and a synthetic one with silence at the start
  frontend = tre.MelFrontEnd()
  for y in clips:
    with torch.no_grad():
      want = frontend(torch.from_numpy(y)[None])[0, 0].numpy()
    got = features.log_mel(y, fe)
    assert got.dtype == np.float32
    assert got.shape == want.shape == (128, fe.num_frames(len(y)))
    assert want.max() - want.min() > 1.0  # a real dynamic range
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)
