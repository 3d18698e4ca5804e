"""The `ravdess` TFDS builder: RAVDESS audio as log-mel spectrograms.

Configs are `<subset>_<frontend>`: subsets `speech`, `song`, `all`; front ends
`predecessor48k`, `panns32k`, `panns16k`, `efficientat32k` (`ser_jax.features.FRONTENDS`).
Default: `speech_predecessor48k`. One split, `train`, holds every clip; folds are chosen at
load time by actor (`ser_jax.splits`). Files are array_record, written and read without
TensorFlow:

  import tfds_ravdess  # registers 'ravdess'
  builder = tfds.builder('ravdess/speech_predecessor48k', data_dir=...)
  builder.download_and_prepare()  # or: RAVDESS_DIR=/path/to/zips_or_Actor_dirs
  ds = tfds.data_source('ravdess/speech_predecessor48k', split='train', data_dir=...)

From the command line (TFDS's `build` command; the `tfds` entry point itself needs
TensorFlow in TFDS 4.9.10): `python -m tfds_ravdess --config=speech_predecessor48k
--data_dir=DIR [--manual_dir=RAVDESS_DIR]` (no --config: all 12 configs).

Where the audio comes from, first match wins:
1. `download_config.manual_dir`, when given explicitly;
2. the directory in the `RAVDESS_DIR` environment variable;
3. the default manual dir `<data_dir>/downloads/manual/`, when it holds anything;
4. otherwise the Zenodo archives (record 1188976) are downloaded (progress bar).
A directory may hold the official zips and/or the extracted `Actor_NN/` folders.

Feature extraction runs in a process pool (builder kwarg `num_workers`, else
`$RAVDESS_NUM_WORKERS`, else the CPUs this process may use; 0 or 1 runs in-process),
in file-name order, with a progress bar.
"""

import dataclasses
import logging
import multiprocessing
import os
import socket
import sys
import urllib.parse

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ser_jax import features as features_lib
from tfds_ravdess import sources as src_lib

log = logging.getLogger(__name__)

ENV_DIR = "RAVDESS_DIR"
ENV_WORKERS = "RAVDESS_NUM_WORKERS"


@dataclasses.dataclass
class RavdessConfig(tfds.core.BuilderConfig):
  """A subset (speech/song/all) and a log-mel front end."""
  subset: str = "speech"
  frontend: str = "predecessor48k"


def _make_configs() -> list[RavdessConfig]:
  configs = []
  for subset in src_lib.SUBSETS:
    for name, fe in features_lib.FRONTENDS.items():
      configs.append(RavdessConfig(
          name=f"{subset}_{name}", subset=subset, frontend=name,
          description=f"RAVDESS {subset} clips as {fe.describe()}"))
  return configs


def _num_workers() -> int:
  env = os.environ.get(ENV_WORKERS)
  if env:
    try:
      return max(0, int(env))
    except ValueError as e:
      raise ValueError(f"{ENV_WORKERS}={env!r}: expected an integer") from e
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


class Builder(tfds.core.GeneratorBasedBuilder):
  """RAVDESS audio (speech and song) as full-length log-mel spectrograms."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _make_configs()
  DEFAULT_CONFIG_NAME = "speech_predecessor48k"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: without it the archives are downloaded from Zenodo. Put "
      f"{src_lib.ARCHIVES['speech']} and/or {src_lib.ARCHIVES['song']} (from "
      f"{src_lib.ZENODO_RECORD}), or their extracted Actor_01/ .. Actor_24/ "
      f"folders, in the manual dir or in the directory named by ${ENV_DIR}.")

  def __init__(self, *, file_format=None, num_workers: int | None = None, **kwargs):
    """See tfds.core.GeneratorBasedBuilder; `num_workers` overrides $RAVDESS_NUM_WORKERS."""
    # array_record: random access, and written/read without TensorFlow.
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._num_workers = num_workers

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's own code_path needs the `importlib_resources` backport (only
    # installed for Python < 3.9) for packaged builders; this is what it computes.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    fe = features_lib.get_frontend(self.builder_config.frontend)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # (mel, frames), full clip length. Stored as raw bytes: TFDS's
            # default float_list proto costs ~80 ms per clip to serialise.
            "log_mel": tfds.features.Tensor(shape=(fe.n_mels, None),
                                            dtype=np.float32, encoding="bytes"),
            "emotion": tfds.features.ClassLabel(names=src_lib.EMOTIONS),
            "intensity": tfds.features.ClassLabel(names=src_lib.INTENSITIES),
            "statement": tfds.features.ClassLabel(names=src_lib.STATEMENTS),
            "repetition": tfds.features.Scalar(dtype=np.int32),
            "actor": tfds.features.Scalar(dtype=np.int32),
            "gender": tfds.features.ClassLabel(names=src_lib.GENDERS),
            "vocal_channel": tfds.features.ClassLabel(
                names=src_lib.VOCAL_CHANNELS),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "duration": tfds.features.Scalar(dtype=np.float32),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("log_mel", "emotion"),
        # Stored in source order (actor, file name): folds are chosen and shuffled at load
        # time with a seed, and skipping TFDS's hash-and-shuffle pass speeds up the build.
        disable_shuffling=True,
        homepage=src_lib.ZENODO_RECORD,
        license="CC BY-NC-SA 4.0",
    )

  def _source_dir(self, dl_manager) -> str | None:
    """The directory to read, or None to download (see the module docstring)."""
    manual = getattr(dl_manager, "_manual_dir", None)
    default_manual = getattr(dl_manager, "_download_dir", None)
    default_manual = default_manual / "manual" if default_manual else None
    if manual is not None and manual != default_manual:
      return os.fspath(manual)  # explicit download_config.manual_dir
    env = os.environ.get(ENV_DIR)
    if env:
      return env
    if manual is not None and os.path.isdir(manual) and os.listdir(manual):
      return os.fspath(manual)
    return None

  def _split_generators(self, dl_manager):
    subset = self.builder_config.subset
    root = self._source_dir(dl_manager)
    if root is None:
      manual = getattr(dl_manager, "_manual_dir", None) or "<data_dir>/downloads/manual"
      wanted = ("speech", "song") if subset == "all" else (subset,)
      urls = {s: src_lib.URLS[s] for s in wanted}
      try:
        for url in urls.values():
          _check_reachable(url)
        paths = dl_manager.download(urls)  # shows a progress bar
      except Exception as e:  # network errors come in many types
        raise src_lib.RavdessInputError(
            f"Could not download {', '.join(urls.values())} ({type(e).__name__}: "
            f"{e}). To build offline, put the files in a directory and set "
            f"{ENV_DIR} to it (or pass download_config=tfds.download."
            f"DownloadConfig(manual_dir=...), or use {manual}). "
            + src_lib.placement_help(f"${ENV_DIR}", subset)) from e
      sources = []
      for s, path in sorted(paths.items()):
        found, skipped = src_lib.zip_sources(os.fspath(path), s)
        for where in skipped:
          log.warning("Skipping %s: not a RAVDESS file name", where)
        sources += found
      sources = src_lib.drop_duplicates(sources)
    else:
      log.info("Reading RAVDESS %s files from %s", subset, root)
      sources = src_lib.find_sources(root, subset)
    log.info("Found %d RAVDESS %s clips", len(sources), subset)
    return {"train": self._generate_examples(sources)}

  def _generate_examples(self, sources):
    frontend = self.builder_config.frontend
    args = [(s, frontend) for s in sources]
    workers = self._num_workers
    workers = min(_num_workers() if workers is None else workers, len(sources))
    pool = None
    features_lib.warm_up(frontend)  # forked workers inherit the filterbank
    if workers > 1:
      pool = multiprocessing.get_context(_start_method()).Pool(workers)
      results = pool.imap(_extract_star, args, chunksize=4)  # keeps file order
    else:
      results = map(_extract_star, args)
    try:
      for source, values, notes in tfds.core.utils.tqdm(
          results, total=len(args), unit=" files",
          desc=f"Log-mel {frontend} ({max(workers, 1)} proc)"):
        for note in notes:
          log.info(note)
        info = source.info
        yield info.file_name, {
            "log_mel": values["log_mel"],
            "emotion": info.emotion,
            "intensity": info.intensity,
            "statement": info.statement,
            "repetition": info.repetition,
            "actor": info.actor,
            "gender": info.gender,
            "vocal_channel": info.vocal_channel,
            "num_frames": values["num_frames"],
            "duration": values["duration"],
            "file_name": info.file_name,
        }
    finally:
      if pool is not None:
        pool.terminate()
        pool.join()


def _check_reachable(url: str, timeout: float = 15.0) -> None:
  """Raises OSError fast when `url`'s host can't be reached.

  TFDS retries a failed download with back-off for minutes; offline, one quick
  connection attempt gives the where-to-put-the-files error at once. Skipped when a
  proxy is configured (the direct connection may be blocked while the proxy works).
  """
  if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "http_proxy",
                                     "HTTP_PROXY", "all_proxy", "ALL_PROXY")):
    return
  parsed = urllib.parse.urlsplit(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  with socket.create_connection((parsed.hostname, port), timeout=timeout):
    pass


def _start_method() -> str:
  """'fork' (fast; workers inherit the filterbank) unless JAX is loaded or fork is
  unavailable: forking a process whose JAX runtime has threads can deadlock, so then
  'spawn' (slower start: each worker imports librosa; scripts need a __main__ guard).
  """
  if "jax" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
    return "spawn"
  return "fork"


def _extract_star(args):
  return src_lib.extract(*args)
