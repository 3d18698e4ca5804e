r"""Benchmarks building the `ravdess` dataset against the predecessor's feature loop.

  python bench/build_dataset.py --wav_dir /path/to/Actor_dirs_or_zips [--num_workers 2]

Measures, on the same files in the same run (file cache warmed first):
- the predecessor's loop: one process, one file at a time,
  `librosa.load(sr=48000)` + `melspectrogram(n_fft=2048, win_length=1920,
  hop_length=480, n_mels=128)` + `power_to_db(ref=np.max)`; run twice: with the
  default BLAS threads (as it ran) and with BLAS held to one thread (its best case on
  a busy machine, where OpenBLAS's spinning threads slow it down);
- our front end alone (`ser_jax.features`, one process);
- the full TFDS build (`ravdess/<config>` into a temporary data_dir: decoding,
  log-mel in a process pool, serialising, writing array_record), with progress bars;
and prints files/s and CPU ms per file (this process plus its workers) for each, and the
ratio of the full build's files/s to each baseline's. The machine must be quiet
(bench/machine.py): the script refuses to measure when other processes share the cores
(exit status 3); with --force it measures anyway, marks each line during which others used
CPU "machine busy" and gives no ratio for it. The build's own worker processes count as ours.
"""

import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

import machine  # bench/machine.py: is the machine quiet enough to measure?
from ser_jax import features
from tfds_ravdess import sources

_WAV_DIR = flags.DEFINE_string("wav_dir", None, "RAVDESS Actor_NN/ folders (or zips).",
                               required=True)
_CONFIG = flags.DEFINE_string("config", "speech_predecessor48k", "ravdess builder config.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Feature processes for the build (default: all CPUs).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Use only the first N files (0: all).")
machine.define_absl_flags()


def _predecessor_loop(paths):
  import librosa  # pylint: disable=g-import-not-at-top
  for p in paths:
    y, sr = librosa.load(p, sr=48000)
    s = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, win_length=1920,
                                       hop_length=480, n_mels=128)
    librosa.power_to_db(s, ref=np.max)


def _ours_single_process(paths, frontend):
  for p in paths:
    features.log_mel(features.load_audio(p, frontend.sample_rate), frontend)


def _timed(guard, fn, *args):
  """(wall seconds, CPU seconds of this process and its reaped children, busy note)."""
  token = guard.start_row()
  t, c = time.perf_counter(), os.times()
  fn(*args)
  d = os.times()
  cpu = (d.user + d.system + d.children_user + d.children_system
         - c.user - c.system - c.children_user - c.children_system)
  return time.perf_counter() - t, cpu, guard.end_row(token)


def main(argv):
  del argv
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  import tfds_ravdess  # pylint: disable=g-import-not-at-top,unused-import

  guard = machine.Guard(flags.FLAGS)
  guard.check_before()
  subset, frontend_name = _CONFIG.value.split("_", 1)
  frontend = features.get_frontend(frontend_name)
  srcs = sources.find_sources(_WAV_DIR.value, subset)
  if _LIMIT.value:
    srcs = srcs[:_LIMIT.value]
  if any(s.member for s in srcs):
    raise SystemExit("--wav_dir must hold extracted Actor_NN/ folders for the "
                     "baseline comparison (it found zip members)")
  paths = [s.path for s in srcs]
  n = len(paths)
  for p in paths:  # warm the file cache so no measurement pays for the disk
    with open(p, "rb") as f:
      f.read()
  _predecessor_loop(paths[:1])  # librosa's lazy imports and caches
  _ours_single_process(paths[:1], frontend)

  results = {}
  results["predecessor loop (librosa, default BLAS threads)"] = _timed(
      guard, _predecessor_loop, paths)
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    results["predecessor loop (librosa, 1 BLAS thread)"] = _timed(
        guard, _predecessor_loop, paths)
  if frontend_name == "predecessor48k":
    results["our front end alone (1 process)"] = _timed(
        guard, _ours_single_process, paths, frontend)

  with tempfile.TemporaryDirectory() as data_dir:
    builder = tfds.builder(f"ravdess/{_CONFIG.value}", data_dir=data_dir,
                           num_workers=_NUM_WORKERS.value)
    config = tfds.download.DownloadConfig(manual_dir=_WAV_DIR.value)
    if _LIMIT.value:  # build from exactly the measured files
      link_dir = os.path.join(data_dir, "wavs")
      for p in paths:
        d = os.path.join(link_dir, os.path.basename(os.path.dirname(p)))
        os.makedirs(d, exist_ok=True)
        os.symlink(p, os.path.join(d, os.path.basename(p)))
      config = tfds.download.DownloadConfig(manual_dir=link_dir)
    workers = builder._num_workers  # pylint: disable=protected-access
    label = (f"full TFDS build ({_CONFIG.value}, "
             f"{'auto' if workers is None else workers} workers, array_record)")
    results[label] = _timed(
        guard, lambda: builder.download_and_prepare(download_config=config))
    built = builder.info.splits["train"].num_examples
    if built != n:
      raise SystemExit(f"built {built} examples from {n} files")

  print(f"\n{n} files, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, config {_CONFIG.value}")
  for name, (wall, cpu, busy) in results.items():
    print(f"  {name:58s} {n / wall:7.1f} files/s  ({wall:6.1f} s wall, "
          f"{1000 * cpu / n:5.1f} ms CPU/file)" + (f"  ({busy})" if busy else ""))
  for k, (wall, _, busy) in results.items():
    if k.startswith("predecessor"):
      if busy or results[label][2]:
        print(f"  ratio full build / {k}: not given (machine busy)")
      else:
        print(f"  ratio full build / {k}: {wall / results[label][0]:.2f}x")


if __name__ == "__main__":
  app.run(main)
