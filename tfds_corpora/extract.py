"""Decoding clips and computing their log-mels in a process pool (no TFDS needed).

`extract_all` runs `extract` over every source in worker processes, in the sources'
order, with a progress bar. A file that fails comes back as a `Result` with a `problem`
instead of raising, so the caller can go on and report every bad file at once.
"""

import dataclasses
import io
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from ser_jax import features
from tfds_corpora import sources as sources_lib

log = logging.getLogger(__name__)

ENV_WORKERS = "SER_NUM_WORKERS"
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


@dataclasses.dataclass
class Result:
  """What decoding one source gave."""
  index: int  # position in the list given to extract_all
  values: dict | None = None  # log_mel (n_mels, frames), num_frames, duration
  notes: list[str] = dataclasses.field(default_factory=list)  # conversions, to log
  warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. silent clip
  problem: tuple[str, str] | None = None  # (kind, message) when the file is unusable


def _decode_problem(source: sources_lib.Source, error: features.AudioDecodeError,
                    data: bytes | None) -> tuple[str, str]:
  if data is None:
    try:
      with open(source.path, "rb") as f:
        data = f.read(len(_LFS_POINTER))
    except OSError:
      data = b""
  if data.startswith(_LFS_POINTER):
    return ("Git LFS pointer instead of audio",
            f"{source.location}: a Git LFS pointer file, not audio; fetch the audio "
            "(`git lfs pull` in the clone) and build again")
  return error.problem, str(error)


def extract(index: int, source: sources_lib.Source, frontend: str | None) -> Result:
  """Decodes one clip and, unless `frontend` is None, computes its log-mel.

  With `frontend=None` the clip is only decoded at its own rate and checked (the cheap
  pass that finds every bad file when the build is going to fail anyway).
  """
  result = Result(index)
  fe = features.get_frontend(frontend) if frontend else None
  data = None
  try:
    # Zip members are decoded from memory; plain files by path.
    if source.member is not None:
      data = source.read_bytes()
    decoded = features.read_audio(source.path if data is None else io.BytesIO(data),
                                  fe.sample_rate if fe else None, source.location)
  except sources_lib.ArchiveMemberError as e:
    result.problem = ("damaged archive member", str(e))
    return result
  except features.AudioDecodeError as e:
    result.problem = _decode_problem(source, e, data)
    return result
  except OSError as e:
    result.problem = ("unreadable file", f"{source.location}: cannot read ({e})")
    return result
  result.notes, result.warnings = list(decoded.notes), list(decoded.warnings)
  if fe is not None:
    # The one clip -> features path, shared with prediction.
    mel, more = features.clip_to_features(decoded.waveform, fe.sample_rate, fe)
    result.notes += [f"{source.location}: {note}" for note in more]
    result.values = {"log_mel": mel, "num_frames": mel.shape[1],  # (mel, frames)
                     "duration": np.float32(decoded.duration)}
  return result


def num_workers(requested: int | None = None) -> int:
  """`requested`, else $SER_NUM_WORKERS, else the CPUs this process may use."""
  if requested is not None:
    return max(0, requested)
  env = os.environ.get(ENV_WORKERS)
  if env:
    try:
      return max(0, int(env))
    except ValueError as e:
      raise sources_lib.CorpusInputError(f"{ENV_WORKERS}={env!r}: expected an integer"
                                         ) from e
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def _start_method() -> str:
  """'fork' (fast; workers inherit the filterbank) unless JAX is loaded or fork is
  unavailable: forking a process whose JAX runtime has threads can deadlock, so then
  'spawn' (slower start: each worker imports librosa; scripts need a __main__ guard).
  """
  if "jax" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
    return "spawn"
  return "fork"


def _extract_star(args):
  return extract(*args)


def extract_all(sources: Sequence[sources_lib.Source], frontend: str | None,
                workers: int | None = None, desc: str = "Decoding") -> Iterator[Result]:
  """`extract` of every source, in order, in a process pool with a progress bar.

  Args:
    sources: the clips.
    frontend: a `ser_jax.features.FRONTENDS` name, or None to decode and check only.
    workers: processes (None: `num_workers()`); 0 or 1 runs in this process.
    desc: the progress bar's label.

  Yields:
    One Result per source, in the order of `sources`.
  """
  from tensorflow_datasets.core import utils as tfds_utils  # pylint: disable=g-import-not-at-top
  args = [(i, s, frontend) for i, s in enumerate(sources)]
  workers = min(num_workers(workers), len(sources))
  if frontend:
    features.warm_up(frontend)  # forked workers inherit the filterbank
  pool = None
  if workers > 1:
    pool = multiprocessing.get_context(_start_method()).Pool(workers)
    results = pool.imap(_extract_star, args, chunksize=4)  # keeps the order
  else:
    results = map(_extract_star, args)
  try:
    yield from tfds_utils.tqdm(results, total=len(args), unit=" files",
                               desc=f"{desc} ({max(workers, 1)} proc)")
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()
