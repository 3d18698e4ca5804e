"""RAVDESS file names: labels, checks, archive names (no TFDS, no TensorFlow).

A RAVDESS audio file is named `MM-VV-EE-II-SS-RR-AA.wav` (7 two-digit fields):
modality (03 = audio-only), vocal channel (01 speech, 02 song), emotion (01..08),
intensity (01 normal, 02 strong; neutral has no strong), statement (01 "Kids are
talking by the door", 02 "Dogs are sitting by the door"), repetition (01, 02) and
actor (01..24; odd male, even female). Song has emotions 01..06 only.

`CORPUS` describes RAVDESS to the shared scanner (`tfds_corpora.sources`, whose docstring
has the policy for bad input). RAVDESS's own rules:
- A `.wav` whose name is not 7 two-digit fields (e.g. `notes.wav`, `x (1).wav`) is
  skipped with a warning naming it: archives and copies collect such strays.
- A name with 7 fields whose values are impossible for RAVDESS (emotion 09, modality 01,
  actor 25, neutral at strong intensity, song with disgust, a file in `Actor_05/`
  whose name says actor 07) is a problem: it claims to be RAVDESS but can't be labelled.
- The Zenodo record's audio archives are read; its per-actor video archives
  (`Video_Speech_Actor_01.zip`, `Video_Song_Actor_01.zip`, ...) are skipped with a warning.
"""

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

from ser_jax import labels
from tfds_corpora import sources as sources_lib

EMOTIONS = labels.EMOTIONS
SONG_EMOTIONS = EMOTIONS[:6]
INTENSITIES = ("normal", "strong")
STATEMENTS = ("kids", "dogs")
GENDERS = ("male", "female")
VOCAL_CHANNELS = ("speech", "song")
SUBSETS = ("speech", "song", "all")

ARCHIVES = {
    "speech": "Audio_Speech_Actors_01-24.zip",
    "song": "Audio_Song_Actors_01-24.zip",
}
ZENODO_RECORD = "https://zenodo.org/records/1188976"
URLS = {k: f"{ZENODO_RECORD}/files/{v}" for k, v in ARCHIVES.items()}

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.wav$",
                      re.IGNORECASE)
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")


# Bad input data: the message names every bad file and the problem.
RavdessInputError = sources_lib.CorpusInputError


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """Labels parsed from a RAVDESS file name (0-based class indices)."""
  file_name: str
  vocal_channel: int  # 0 speech, 1 song
  emotion: int  # 0..7 in EMOTIONS order
  intensity: int  # 0 normal, 1 strong
  statement: int  # 0 kids, 1 dogs
  repetition: int  # 1 or 2
  actor: int  # 1..24

  @property
  def gender(self) -> int:
    return 0 if self.actor % 2 else 1  # odd actors are male


def parse_file_name(name: str, where: str | None = None) -> ClipInfo | None:
  """Parses a RAVDESS audio file name.

  Args:
    name: the base name, e.g. `03-01-05-02-01-01-04.wav`.
    where: the full location, used in error messages (default: `name`).

  Returns:
    The labels, or None if `name` is not 7 two-digit fields ending in `.wav`.

  Raises:
    RavdessInputError: the name has 7 fields but a value RAVDESS can't have.
  """
  m = _NAME_RE.match(name)
  if not m:
    return None
  mod, vc, emo, inten, stmt, rep, actor = (int(g) for g in m.groups())
  where = where or name

  def bad(field, value, expected):
    return RavdessInputError(
        f"{where}: field '{field}' is {value:02d}, expected {expected} "
        "(RAVDESS names are modality-channel-emotion-intensity-statement-"
        "repetition-actor)")

  if mod != 3:
    raise bad("modality", mod, "03 (audio-only; 01/02 are video files)")
  if vc not in (1, 2):
    raise bad("vocal channel", vc, "01 (speech) or 02 (song)")
  max_emotion = 8 if vc == 1 else 6
  if not 1 <= emo <= max_emotion:
    raise bad("emotion", emo, f"01..{max_emotion:02d} for "
              f"{VOCAL_CHANNELS[vc - 1]}")
  if inten not in (1, 2):
    raise bad("intensity", inten, "01 (normal) or 02 (strong)")
  if emo == 1 and inten == 2:
    raise bad("intensity", inten, "01: neutral has no strong intensity")
  if stmt not in (1, 2):
    raise bad("statement", stmt, "01 (kids) or 02 (dogs)")
  if rep not in (1, 2):
    raise bad("repetition", rep, "01 or 02")
  if not 1 <= actor <= 24:
    raise bad("actor", actor, "01..24")
  return ClipInfo(file_name=name, vocal_channel=vc - 1, emotion=emo - 1,
                  intensity=inten - 1, statement=stmt - 1, repetition=rep,
                  actor=actor)


def _check_actor_dir(info: ClipInfo, parent: str, where: str):
  m = _ACTOR_DIR_RE.match(parent)
  if m and int(m.group(1)) != info.actor:
    raise RavdessInputError(
        f"{where}: the name says actor {info.actor:02d} but the file is in "
        f"{parent}/; refusing to guess which label is right")


def labels_from_info(info: ClipInfo) -> sources_lib.Labels:
  """The shared schema's labels (plus RAVDESS's own fields) of a parsed name."""
  return sources_lib.Labels(
      name=info.file_name, emotion=EMOTIONS[info.emotion],
      corpus_label=f"{info.emotion + 1:02d}", speaker=f"{info.actor:02d}",
      gender=GENDERS[info.gender],
      extra={"intensity": info.intensity, "statement": info.statement,
             "repetition": info.repetition, "actor": info.actor,
             "vocal_channel": info.vocal_channel})


def parse_path(parts: Sequence[str], where: str,
               side: Mapping[str, bytes]) -> sources_lib.Labels | None:
  """`tfds_corpora.sources.Parser` for RAVDESS: the name, checked against `Actor_NN/`."""
  del side
  info = parse_file_name(parts[-1], where)
  if info is None:
    return None
  if len(parts) > 1:
    _check_actor_dir(info, parts[-2], where)
  return labels_from_info(info)


CORPUS = sources_lib.Corpus(
    name="ravdess", title="RAVDESS", parse=parse_path,
    name_pattern="MM-VV-EE-II-SS-RR-AA.wav, 7 two-digit fields",
    homepage=ZENODO_RECORD, archives=tuple(ARCHIVES.values()),
    other_archives=((r"Video_(Speech|Song)_Actor_\d{2}\.zip",
                     "a RAVDESS video archive (.mp4 files)"),))


def wanted(info_or_labels, subset: str) -> bool:
  """Whether a clip (ClipInfo or Labels) belongs to `subset`."""
  channel = (info_or_labels.vocal_channel if isinstance(info_or_labels, ClipInfo)
             else info_or_labels.extra["vocal_channel"])
  return subset == "all" or VOCAL_CHANNELS[channel] == subset


def find_sources(root: str | os.PathLike, subset: str) -> list[sources_lib.Source]:
  """Finds the RAVDESS clips of `subset` under `root` (folders and/or zips, or a zip).

  Args:
    root: a folder holding the official zips and/or extracted `Actor_NN/` folders (at
      any depth), or one of the zips.
    subset: 'speech', 'song' or 'all'.

  Returns:
    One Source per clip, sorted by file name.

  Raises:
    RavdessInputError: listing every problem file (see the module docstring), or saying
      which files to put where when there are none.
  """
  if subset not in SUBSETS:
    raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
  root = os.fspath(root)
  if not os.path.exists(root):
    raise RavdessInputError(f"RAVDESS directory {root} does not exist. "
                            + placement_help(root, subset))
  problems = sources_lib.Problems()
  found = sources_lib.scan(root, CORPUS, problems, lambda l: wanted(l, subset))
  if problems:
    raise problems.error(CORPUS.title, root)
  if not found:
    raise RavdessInputError(f"No RAVDESS {subset} WAV files found in {root}. "
                            + placement_help(root, subset))
  return found


def placement_help(root: str, subset: str) -> str:
  """Says which files to put where for `subset` (the example is a file of `subset`)."""
  zips = [ARCHIVES[s] for s in (("speech", "song") if subset == "all" else (subset,))]
  channel = 2 if subset == "song" else 1
  example = f"Actor_01/03-{channel:02d}-01-01-01-01-01.wav"
  return sources_lib.placement_help(root, "RAVDESS", zips, ZENODO_RECORD, example)
