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

The features are the shared schema of every corpus builder (`tfds_corpora.builder`:
log_mel, emotion, corpus_label, speaker 'ravdess:NN', gender, corpus, language, ...)
plus RAVDESS's own: intensity, statement, repetition, actor, vocal_channel.

Where the audio comes from, first match wins:
1. `download_config.manual_dir`, when given explicitly;
2. the folder (or zip) in the `RAVDESS_DIR` environment variable;
3. the default manual dir `<data_dir>/downloads/manual/`, when it holds anything;
4. otherwise the Zenodo archives (record 1188976) are downloaded (progress bar).
A folder may hold the official zips and/or the extracted `Actor_NN/` folders.

Feature extraction runs in a process pool (builder kwarg `num_workers`, else
`$SER_NUM_WORKERS`, else the CPUs this process may use; 0 or 1 runs in-process),
in file-name order, with a progress bar.
"""

import dataclasses
import os
import socket
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds

from ser_jax import features as features_lib
from tfds_corpora import builder as builder_lib
from tfds_ravdess import sources as src_lib


@dataclasses.dataclass
class RavdessConfig(builder_lib.FrontendConfig):
  """A subset (speech/song/all) and a log-mel front end."""
  subset: str = "speech"


def _make_configs() -> list[RavdessConfig]:
  return [RavdessConfig(name=f"{subset}_{name}", subset=subset, frontend=name,
                        description=f"RAVDESS {subset} clips as "
                        + fe.describe())
          for subset in src_lib.SUBSETS for name, fe in features_lib.FRONTENDS.items()]


class Builder(builder_lib.CorpusBuilder):
  """RAVDESS audio (speech and song) as full-length log-mel spectrograms."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "2.0.0": "The shared corpus schema: emotion has the shared 9-name vocabulary (ids "
               "0..7 unchanged, 8 boredom), gender adds 'unknown'; new corpus_label, "
               "speaker ('ravdess:NN'), corpus, language.",
  }
  BUILDER_CONFIGS = _make_configs()
  DEFAULT_CONFIG_NAME = "speech_predecessor48k"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: without it the archives are downloaded from Zenodo. Put "
      f"{src_lib.ARCHIVES['speech']} and/or {src_lib.ARCHIVES['song']} (from "
      f"{src_lib.ZENODO_RECORD}), or their extracted Actor_01/ .. Actor_24/ "
      "folders, in the manual dir or in the folder named by $RAVDESS_DIR (or point "
      "it at one of the zips).")
  CORPUS = src_lib.CORPUS
  LANGUAGE = "en"
  LICENSE = "CC BY-NC-SA 4.0"

  def _extra_features(self) -> dict:
    return {
        "intensity": tfds.features.ClassLabel(names=src_lib.INTENSITIES),
        "statement": tfds.features.ClassLabel(names=src_lib.STATEMENTS),
        "repetition": tfds.features.Scalar(dtype=np.int32),
        "actor": tfds.features.Scalar(dtype=np.int32),
        "vocal_channel": tfds.features.ClassLabel(names=src_lib.VOCAL_CHANNELS),
    }

  def _wanted(self, labels) -> bool:
    return src_lib.wanted(labels, self.builder_config.subset)

  def _placement_help(self, root: str) -> str:
    return src_lib.placement_help(root, self.builder_config.subset)

  def _download(self, dl_manager) -> list[str]:
    subset = self.builder_config.subset
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
          f"{self.ENV_DIR} to it (or pass download_config=tfds.download."
          f"DownloadConfig(manual_dir=...), or use {manual}). "
          + src_lib.placement_help(f"${self.ENV_DIR}", subset)) from e
    return [os.fspath(paths[s]) for s in sorted(paths)]


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
