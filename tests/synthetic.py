"""Synthetic RAVDESS-like WAV files and tiny TFDS builds for tests.

`write_synthetic_ravdess` writes `Actor_NN/03-VV-EE-II-SS-RR-NN.wav` files whose content
depends on the emotion (a harmonic tone whose pitch is set by the emotion, slightly
shifted per actor, plus a little noise), so a small model can learn emotion from the
log-mel. `build_ravdess` builds the `ravdess` TFDS dataset from such a directory.
`write_clip` writes one short tone in any container/sample format (the other corpora's
dummy data and the bad-input corpus of tests/test_bad_inputs.py); `build` builds any
registered corpus builder from a folder.
"""

import os
import pathlib
from collections.abc import Iterable

import numpy as np
import soundfile as sf

# Base pitch per emotion id 1..8: a factor 1.5 apart, so each lands in its own mel bins.
_EMOTION_HZ = {e: 300.0 * 1.5 ** (e - 1) for e in range(1, 9)}


def file_name(vocal_channel: int, emotion: int, intensity: int, statement: int,
              repetition: int, actor: int) -> str:
  """The RAVDESS audio file name for these (1-based, as in the file name) fields."""
  return (f"03-{vocal_channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-"
          f"{repetition:02d}-{actor:02d}.wav")


def synthetic_clip(emotion: int, actor: int, seconds: float, sample_rate: int,
                   intensity: int = 1, statement: int = 1, repetition: int = 1,
                   vocal_channel: int = 1, seed: int = 0) -> np.ndarray:
  """A float32 `(samples,)` clip whose spectrum identifies `emotion`.

  The noise depends only on the arguments, so a test can recompute any written clip.
  """
  rng = np.random.default_rng(
      [seed, vocal_channel, emotion, intensity, statement, repetition, actor])
  t = np.arange(int(round(seconds * sample_rate))) / sample_rate
  f0 = _EMOTION_HZ[emotion] * (1.0 + 0.02 * (actor % 3 - 1))
  amp = 0.2 if intensity == 1 else 0.4
  y = sum(amp / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3)
          if k * f0 < sample_rate / 2)
  fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades: no clicks
  y = y * fade + 0.003 * rng.standard_normal(t.shape)
  return y.astype(np.float32)


def write_synthetic_ravdess(
    root: str | os.PathLike,
    actors: Iterable[int] = range(1, 9),
    emotions: Iterable[int] = range(1, 9),
    seconds: float = 0.5,
    sample_rate: int = 48000,
    *,
    vocal_channel: int = 1,
    intensities: Iterable[int] = (1,),
    statements: Iterable[int] = (1,),
    repetitions: Iterable[int] = (1,),
    channels: int = 1,
    subtype: str = "PCM_16",
    seed: int = 0,
) -> list[pathlib.Path]:
  """Writes synthetic RAVDESS-named WAV files under `root/Actor_NN/`.

  Args:
    root: output directory (created).
    actors: actor ids 1..24.
    emotions: emotion ids 1..8 (as in the file name: 1 neutral .. 8 surprised).
    seconds: clip length.
    sample_rate: WAV sample rate.
    vocal_channel: 1 speech, 2 song.
    intensities, statements, repetitions: values (1 or 2) to combine; neutral
      (emotion 1) only gets intensity 1, as in RAVDESS.
    channels: 1 mono; 2 writes the same signal on both channels.
    subtype: soundfile subtype, e.g. 'PCM_16'.
    seed: noise seed.

  Returns:
    The written paths, sorted.
  """
  root = pathlib.Path(root)
  paths = []
  for actor in actors:
    d = root / f"Actor_{actor:02d}"
    d.mkdir(parents=True, exist_ok=True)
    for emotion in emotions:
      for intensity in intensities:
        if emotion == 1 and intensity == 2:
          continue
        for statement in statements:
          for repetition in repetitions:
            y = synthetic_clip(emotion, actor, seconds, sample_rate, intensity,
                               statement, repetition, vocal_channel, seed)
            if channels > 1:
              y = np.repeat(y[:, None], channels, axis=1)  # (samples, channels)
            path = d / file_name(vocal_channel, emotion, intensity, statement,
                                 repetition, actor)
            sf.write(path, y, sample_rate, subtype=subtype)
            paths.append(path)
  return sorted(paths)


def build_ravdess(wav_dir: str | os.PathLike, data_dir: str | os.PathLike,
                  config: str = "speech_predecessor48k", num_workers: int = 0):
  """Builds `ravdess/<config>` into `data_dir` from `wav_dir`; returns the builder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tfds_ravdess  # pylint: disable=g-import-not-at-top,unused-import
  builder = tfds.builder(f"ravdess/{config}", data_dir=os.fspath(data_dir),
                         num_workers=num_workers)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(wav_dir)))
  return builder


def write_clip(path: str | os.PathLike, seconds: float = 0.06, sample_rate: int = 16000,
               *, fmt: str = "WAV", subtype: str = "PCM_16", channels: int = 1,
               hz: float = 440.0, seed: int = 0) -> pathlib.Path:
  """Writes a tone plus a little noise (folders created); returns the path.

  `fmt` is the container whatever the name says (e.g. 'AIFF' into a `.wav`, as TESS has).
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(round(seconds * sample_rate))) / sample_rate
  y = 0.3 * np.sin(2 * np.pi * hz * t) + 0.003 * np.random.default_rng(seed).standard_normal(
      t.shape)
  y = np.repeat(y[:, None], channels, axis=1) if channels > 1 else y
  sf.write(path, y.astype(np.float32), sample_rate, format=fmt, subtype=subtype)
  return path


def build(name: str, source: str | os.PathLike, data_dir: str | os.PathLike,
          num_workers: int = 0):
  """Builds TFDS `name` ('ser_tess/predecessor48k', ...) into `data_dir` from `source`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tfds_corpora  # pylint: disable=g-import-not-at-top,unused-import
  import tfds_ravdess  # pylint: disable=g-import-not-at-top,unused-import
  builder = tfds.builder(name, data_dir=os.fspath(data_dir), num_workers=num_workers)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(source)))
  return builder
