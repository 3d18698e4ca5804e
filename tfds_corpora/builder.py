"""What every corpus builder shares: configs per front end, one feature schema, finding
the audio, the process-pool feature step, one error for every bad file, and a build lock.

A corpus builder subclasses `CorpusBuilder`, sets `CORPUS` (a `tfds_corpora.sources.Corpus`:
how file names are labelled, which archives to read) and a few class attributes, and
gets TFDS configs named after the front ends of `ser_jax.features.FRONTENDS` (RAVDESS adds
a subset: `<subset>_<frontend>`). Every builder stores the same features:

  log_mel       float32 (n_mels, None)  the front end's log-mel, mel-major, full length
  emotion       ClassLabel              ser_jax.labels.VOCABULARY (shared by every corpus)
  corpus_label  Text                    the corpus's own code ('ps', 'W', 'ANG', '05')
  speaker       Text                    globally unique, e.g. 'savee:DC', 'ravdess:01'
  gender        ClassLabel              male, female, unknown
  corpus        Text                    e.g. 'savee'
  language      Text                    e.g. 'en', 'de'
  num_frames    int32                   frames of log_mel
  duration      float32                 seconds of audio in the file
  file_name     Text                    the clip's unique name within the corpus

plus the corpus's own (`_extra_features`; RAVDESS: actor, intensity, ...). Audio is
resampled to the front end's rate and downmixed (logged).

Where the audio comes from, first match wins: `download_config.manual_dir` when given;
the folder (or zip) in the builder's environment variable (`TESS_DIR`, ...); the default
manual dir `<data_dir>/downloads/manual/` when it holds anything; else `_download`
(RAVDESS downloads its archives; the others say where to put the files).

Bad input: every problem file is collected (names, archives, duplicates, then decoding)
and one `CorpusInputError` lists them all, grouped by problem. A failed build leaves no
dataset: TFDS writes into `incomplete.*` and renames it only on success. A build holds a
lock file in its `incomplete.*` folder; a later build deletes the folders of builds that
were killed (their lock is free) and leaves a running build's alone.
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
import time

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ser_jax import features as features_lib
from ser_jax import labels as labels_lib
from tfds_corpora import extract as extract_lib
from tfds_corpora import sources as sources_lib

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # not on POSIX: no lock, no clean-up of killed builds
  fcntl = None

log = logging.getLogger(__name__)

LOCK_FILE = ".build_lock.json"


@dataclasses.dataclass
class FrontendConfig(tfds.core.BuilderConfig):
  """One log-mel front end (`ser_jax.features.FRONTENDS`)."""
  frontend: str = "predecessor48k"


def frontend_configs(title: str) -> list[FrontendConfig]:
  """One config per front end, named after it (e.g. 'predecessor48k')."""
  return [FrontendConfig(name=name, frontend=name,
                         description=f"{title} clips as {fe.describe()}")
          for name, fe in features_lib.FRONTENDS.items()]


def common_features(frontend: str) -> dict:
  """The features every corpus builder stores (see the module docstring)."""
  fe = features_lib.get_frontend(frontend)
  return {
      # (mel, frames), full clip length. Stored as raw bytes: TFDS's default
      # float_list proto costs ~80 ms per clip to serialise.
      "log_mel": tfds.features.Tensor(shape=(fe.n_mels, None), dtype=np.float32,
                                      encoding="bytes"),
      "emotion": tfds.features.ClassLabel(names=labels_lib.VOCABULARY),
      "corpus_label": tfds.features.Text(),
      "speaker": tfds.features.Text(),
      "gender": tfds.features.ClassLabel(names=labels_lib.GENDERS),
      "corpus": tfds.features.Text(),
      "language": tfds.features.Text(),
      "num_frames": tfds.features.Scalar(dtype=np.int32),
      "duration": tfds.features.Scalar(dtype=np.float32),
      "file_name": tfds.features.Text(),
  }


def _lock_free(lock_path: epath.Path) -> bool | None:
  """True when no process holds the lock file, False when one does, None if unknown."""
  try:
    with open(lock_path, "r+b") as f:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True  # closing the file releases the lock again
  except BlockingIOError:
    return False
  except OSError:  # e.g. a file system without flock
    return None


def clean_stale_builds(config_dir: epath.Path, own: epath.Path | None = None) -> list[str]:
  """Deletes `incomplete.*` folders left in `config_dir` by killed builds.

  A folder is deleted only when its lock file records this host and no process holds the
  lock (the kernel releases it when the build dies). Folders without a lock file (from
  a build that did not record itself) and those of other hosts are left with a warning
  saying how to remove them.

  Returns:
    The deleted folders.
  """
  deleted = []
  if fcntl is None or not config_dir.is_dir():
    return deleted
  for d in sorted(config_dir.glob("incomplete.*")):
    if own is not None and os.fspath(d).rstrip("/") == os.fspath(own).rstrip("/"):
      continue
    lock = d / LOCK_FILE
    how = f"if no build is writing it, delete it: rm -r '{d}'"
    if not lock.exists():
      log.warning("%s was left by an unfinished build that recorded no lock; %s", d, how)
      continue
    try:
      owner = json.loads(lock.read_text())
    except (OSError, ValueError):
      owner = {}
    free = _lock_free(lock) if owner.get("host") == socket.gethostname() else None
    if free:
      log.warning("Deleting %s: left by a killed build (pid %s on %s, started %s)", d,
                  owner.get("pid"), owner.get("host"), owner.get("started"))
      shutil.rmtree(d, ignore_errors=True)
      deleted.append(os.fspath(d))
    elif free is None:
      log.warning("%s belongs to a build on %s (pid %s) that this host cannot check; %s",
                  d, owner.get("host"), owner.get("pid"), how)
    else:
      log.info("Leaving %s: a build is running there (pid %s)", d, owner.get("pid"))
  return deleted


@contextlib.contextmanager
def build_lock(build_dir: epath.Path):
  """Holds a lock file (pid, host, start time) in `build_dir` while building."""
  if fcntl is None:
    yield
    return
  build_dir.mkdir(parents=True, exist_ok=True)
  lock = build_dir / LOCK_FILE
  with open(lock, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
    f.flush()
    try:
      yield
    finally:
      lock.unlink(missing_ok=True)  # not part of the finished dataset


class CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the corpus builders: a corpus's audio as full-length log-mel spectrograms.

  A subclass sets `name`, `CORPUS`, `LANGUAGE`, `LICENSE`, `EXAMPLE_PATH` and
  `MANUAL_DOWNLOAD_INSTRUCTIONS`; by default it gets one config per front end and reads
  `$<CORPUS.name upper>_DIR` (e.g. `TESS_DIR`).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  CORPUS: sources_lib.Corpus  # how the corpus is labelled and distributed
  ENV_DIR: str  # environment variable naming the folder (or zip), e.g. 'TESS_DIR'
  LANGUAGE: str  # e.g. 'en'
  LICENSE: str
  EXAMPLE_PATH: str  # a file in the extracted layout, e.g. 'OAF_angry/OAF_back_angry.wav'

  def __init_subclass__(cls, **kwargs):
    if "BUILDER_CONFIGS" not in cls.__dict__:
      cls.BUILDER_CONFIGS = frontend_configs(cls.CORPUS.title)
    if "ENV_DIR" not in cls.__dict__:
      cls.ENV_DIR = f"{cls.CORPUS.name.upper()}_DIR"
    super().__init_subclass__(**kwargs)

  def __init__(self, *, file_format=None, num_workers: int | None = None, **kwargs):
    """See tfds.core.GeneratorBasedBuilder; `num_workers` overrides $SER_NUM_WORKERS."""
    # array_record: random access, and written/read without TensorFlow.
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._num_workers = num_workers

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's own code_path needs the `importlib_resources` backport (only
    # installed for Python < 3.9) for packaged builders; this is what it computes.
    return epath.Path(sys.modules[cls.__module__].__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {**common_features(self.builder_config.frontend), **self._extra_features()}),
        supervised_keys=("log_mel", "emotion"),
        # Stored in source order (clip name): folds are chosen and shuffled at load time
        # with a seed, and skipping TFDS's hash-and-shuffle pass speeds up the build.
        disable_shuffling=True,
        homepage=self.CORPUS.homepage,
        license=self.LICENSE,
    )

  # --- Hooks a corpus may override. ---

  def _extra_features(self) -> dict:
    """The corpus's own features, filled from `Labels.extra` (RAVDESS: actor, ...)."""
    return {}

  def _wanted(self, labels: sources_lib.Labels) -> bool:
    """Whether the config keeps this clip (RAVDESS: its subset)."""
    del labels
    return True

  def _placement_help(self, root: str) -> str:
    return sources_lib.placement_help(root, self.CORPUS.title, self.CORPUS.archives,
                                      self.CORPUS.homepage, self.EXAMPLE_PATH)

  def _download(self, dl_manager) -> list[str]:
    """Paths of downloaded archives; by default there are none (says where to put files)."""
    del dl_manager
    raise sources_lib.CorpusInputError(
        f"No {self.CORPUS.title} files given: set {self.ENV_DIR} (or pass "
        "download_config=tfds.download.DownloadConfig(manual_dir=...), or --manual_dir) "
        "to a folder or zip holding them. " + self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  # --- The build. ---

  def _download_and_prepare(self, dl_manager, download_config=None):
    # TFDS calls this with self.data_path set to this build's `incomplete.*` folder.
    with build_lock(self.data_path):
      clean_stale_builds(self.data_path.parent, own=self.data_path)
      super()._download_and_prepare(dl_manager, download_config)

  def _source_dir(self, dl_manager) -> str | None:
    """The folder or zip to read, or None to download (see the module docstring)."""
    manual = getattr(dl_manager, "_manual_dir", None)
    default_manual = getattr(dl_manager, "_download_dir", None)
    default_manual = default_manual / "manual" if default_manual else None
    if manual is not None and manual != default_manual:
      return os.fspath(manual)  # explicit download_config.manual_dir
    env = os.environ.get(self.ENV_DIR)
    if env:
      return env
    if manual is not None and os.path.isdir(manual) and os.listdir(manual):
      return os.fspath(manual)
    return None

  def _split_generators(self, dl_manager):
    title = self.CORPUS.title
    root = self._source_dir(dl_manager)
    problems = sources_lib.Problems()
    if root is None:
      roots = self._download(dl_manager)
      where = ", ".join(roots)
    else:
      if not os.path.exists(root):
        raise sources_lib.CorpusInputError(
            f"{title} folder {root} does not exist. " + self._placement_help(root))
      log.info("Reading %s files from %s", title, root)
      roots, where = [root], root
    found = []
    for r in roots:
      found += sources_lib.scan(r, self.CORPUS, problems, self._wanted)
    found = sources_lib.drop_duplicates(found, problems) if len(roots) > 1 else found
    if not found and not problems:
      raise sources_lib.CorpusInputError(
          f"No {title} {self.builder_config.name} audio files found in {where}. "
          + self._placement_help(where))
    if problems:
      # The build will fail: decode the rest too (no features), so one error lists all.
      for _ in self._extract(found, None, problems):
        pass
      raise problems.error(title, where, "nothing was built")
    log.info("Found %d %s clips", len(found), title)
    return {"train": self._generate_examples(found, where)}

  def _extract(self, found, frontend, problems):
    """Decodes every clip (in a process pool), logging its notes and collecting problems.

    Yields:
      (source, values) of each good clip when `frontend` is set (None: check only).
    """
    desc = f"Log-mel {frontend}" if frontend else "Checking"
    for r in extract_lib.extract_all(found, frontend, self._num_workers, desc=desc):
      for note in r.notes:
        log.info(note)
      for warning in r.warnings:
        log.warning(warning)
      if r.problem:
        problems.add(*r.problem)
      elif frontend:
        yield found[r.index], r.values

  def _generate_examples(self, found, where):
    problems = sources_lib.Problems()
    corpus = self.CORPUS.name
    for source, values in self._extract(found, self.builder_config.frontend, problems):
      labels = source.labels
      yield source.name, {
          **values,
          "emotion": labels.emotion,
          "corpus_label": labels.corpus_label,
          "speaker": labels_lib.speaker_id(corpus, labels.speaker),
          "gender": labels.gender,
          "corpus": corpus,
          "language": self.LANGUAGE,
          "file_name": labels.name,
          **labels.extra,
      }
    if problems:  # TFDS then deletes the incomplete build
      raise problems.error(self.CORPUS.title, where, "nothing was built")
