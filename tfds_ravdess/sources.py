"""Finding, validating and decoding RAVDESS audio files (no TFDS, no TensorFlow).

A RAVDESS audio file is named `MM-VV-EE-II-SS-RR-AA.wav` (7 two-digit fields):
modality (03 = audio-only), vocal channel (01 speech, 02 song), emotion (01..08),
intensity (01 normal, 02 strong; neutral has no strong), statement (01 "Kids are
talking by the door", 02 "Dogs are sitting by the door"), repetition (01, 02) and
actor (01..24; odd male, even female). Song has emotions 01..06 only.

Policy for bad input (so nothing is ever mislabelled):
- A `.wav` whose name is not 7 two-digit fields (e.g. `notes.wav`, `x (1).wav`) is
  skipped with a warning naming it: archives and copies collect such strays.
- A name with 7 fields whose values are impossible for RAVDESS (emotion 09, modality 01,
  actor 25, neutral at strong intensity, song with disgust, a file in `Actor_05/`
  whose name says actor 07) is an error: it claims to be RAVDESS but can't be labelled.
- A file that does not decode as audio is an error naming it (a damaged copy).
- The same file name found twice (in a zip and a folder, or in two folders) is kept
  once if the copies are byte-identical (CRC-32), with one warning; copies that differ
  are an error naming both places.
- A zip that holds no RAVDESS WAVs, or is not a zip at all, is an error naming it.
- A missing directory, or one without any RAVDESS WAV of the wanted subset, is an
  error saying which files to put where.
- Other sample rates and stereo files are resampled / downmixed (logged).
"""

import dataclasses
import io
import logging
import os
import re
import zipfile
import zlib

import numpy as np

from ser_jax import errors
from ser_jax import features
from ser_jax import labels

log = logging.getLogger(__name__)

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


class RavdessInputError(errors.UserError):
  """Bad input data: the message names the file and the problem."""


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


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one clip's bytes are: a file on disk, or a member of a zip."""
  info: ClipInfo
  path: str  # the file, or the zip archive
  member: str | None = None  # the zip member, None for a plain file
  crc32: int | None = None  # zip members carry their CRC-32

  @property
  def location(self) -> str:
    return f"{self.path}!{self.member}" if self.member else self.path

  def read_bytes(self) -> bytes:
    if self.member is None:
      with open(self.path, "rb") as f:
        return f.read()
    with zipfile.ZipFile(self.path) as z:
      return z.read(self.member)

  def content_crc32(self) -> int:
    if self.crc32 is not None:
      return self.crc32
    return zlib.crc32(self.read_bytes())


def _check_actor_dir(info: ClipInfo, parent: str, where: str):
  m = _ACTOR_DIR_RE.match(parent)
  if m and int(m.group(1)) != info.actor:
    raise RavdessInputError(
        f"{where}: the name says actor {info.actor:02d} but the file is in "
        f"{parent}/; refusing to guess which label is right")


def _wanted(info: ClipInfo, subset: str) -> bool:
  return subset == "all" or VOCAL_CHANNELS[info.vocal_channel] == subset


def zip_sources(zip_path: str, subset: str) -> tuple[list[Source], list[str]]:
  """Sources in one zip, plus the names of WAVs skipped for their name."""
  try:
    z = zipfile.ZipFile(zip_path)
  except (zipfile.BadZipFile, OSError) as e:
    raise RavdessInputError(
        f"{zip_path}: not a readable zip archive ({e}); expected the Zenodo "
        f"archives {' / '.join(ARCHIVES.values())}") from e
  found, skipped, wavs = [], [], 0
  with z:
    for zi in z.infolist():
      if zi.is_dir():
        continue
      parts = zi.filename.split("/")
      base = parts[-1]
      if parts[0] == "__MACOSX" or base.startswith("._"):
        continue  # macOS resource forks, not audio
      if not base.lower().endswith(".wav"):
        continue
      wavs += 1
      where = f"{zip_path}!{zi.filename}"
      info = parse_file_name(base, where)
      if info is None:
        skipped.append(where)
        continue
      if len(parts) > 1:
        _check_actor_dir(info, parts[-2], where)
      if _wanted(info, subset):
        found.append(Source(info, zip_path, zi.filename, zi.CRC))
  if wavs == 0 or wavs == len(skipped):
    raise RavdessInputError(
        f"{zip_path}: not a RAVDESS audio archive (no Actor_NN/03-0V-EE-II-SS-RR-AA.wav "
        f"inside); expected {' or '.join(ARCHIVES.values())} from {ZENODO_RECORD}")
  return found, skipped


def find_sources(root: str | os.PathLike, subset: str) -> list[Source]:
  """Finds the RAVDESS clips of `subset` under `root` (folders and/or zips).

  Args:
    root: a directory holding the official zips and/or extracted `Actor_NN/`
      folders (at any depth).
    subset: 'speech', 'song' or 'all'.

  Returns:
    One Source per clip, sorted by file name.

  Raises:
    RavdessInputError: see the module docstring.
  """
  if subset not in SUBSETS:
    raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise RavdessInputError(f"RAVDESS directory {root} does not exist. "
                            + placement_help(root, subset))
  candidates, skipped = [], []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for fname in sorted(filenames):
      path = os.path.join(dirpath, fname)
      low = fname.lower()
      if low.endswith(".zip"):
        found, skip = zip_sources(path, subset)
        candidates += found
        skipped += skip
      elif low.endswith(".wav") and not fname.startswith("._"):
        info = parse_file_name(fname, path)
        if info is None:
          skipped.append(path)
          continue
        _check_actor_dir(info, os.path.basename(dirpath), path)
        if _wanted(info, subset):
          candidates.append(Source(info, path))
  for where in skipped:
    log.warning("Skipping %s: the name is not a RAVDESS file name "
                "(MM-VV-EE-II-SS-RR-AA.wav, 7 two-digit fields)", where)
  if not candidates:
    raise RavdessInputError(f"No RAVDESS {subset} WAV files found in {root}. "
                            + placement_help(root, subset))
  return drop_duplicates(candidates)


def drop_duplicates(candidates: list[Source]) -> list[Source]:
  by_name: dict[str, list[Source]] = {}
  for s in candidates:
    by_name.setdefault(s.info.file_name, []).append(s)
  result, dup_examples, num_dups = [], [], 0
  for name in sorted(by_name):
    copies = sorted(by_name[name], key=lambda s: (s.member is not None, s.location))
    if len(copies) > 1:
      first = copies[0].content_crc32()
      for other in copies[1:]:
        if other.content_crc32() != first:
          raise RavdessInputError(
              f"{name} is present twice with different contents: "
              f"{copies[0].location} and {other.location}; remove one")
      num_dups += 1
      if len(dup_examples) < 3:
        dup_examples.append(" = ".join(c.location for c in copies))
    result.append(copies[0])  # plain files first: faster to read than zip members
  if num_dups:
    log.warning("%d file names appear more than once with identical contents; using "
                "one copy of each (e.g. %s)", num_dups, "; ".join(dup_examples))
  return result


def placement_help(root: str, subset: str) -> str:
  """Says which files to put where for `subset`."""
  zips = [ARCHIVES[s] for s in (("speech", "song") if subset == "all" else (subset,))]
  return (f"Put {' and '.join(zips)} (from {ZENODO_RECORD}) in {root}, or the "
          f"extracted Actor_01/ .. Actor_24/ folders holding the .wav files "
          f"(e.g. {root}/Actor_01/03-01-01-01-01-01-01.wav).")


# --- Feature extraction (runs in worker processes). ---


def extract(source: Source, frontend_name: str) -> tuple[Source, dict, list[str]]:
  """Decodes one clip and computes its log-mel.

  Returns:
    (source, values, notes): `values` holds `log_mel` float32 (n_mels, frames),
    `num_frames` and `duration`; `notes` are conversions to log in the parent.

  Raises:
    RavdessInputError: the file does not decode.
  """
  fe = features.get_frontend(frontend_name)
  # Zip members are decoded from memory; plain files by path.
  audio = source.path if source.member is None else io.BytesIO(source.read_bytes())
  try:
    y, notes, duration = features.read_audio(audio, fe.sample_rate, source.location)
  except features.AudioDecodeError as e:
    raise RavdessInputError(str(e)) from e
  mel, more = features.clip_to_features(y, fe.sample_rate, fe)  # (mel, frames)
  notes += [f"{source.location}: {note}" for note in more]
  return source, {"log_mel": mel, "num_frames": mel.shape[1],
                  "duration": np.float32(duration)}, notes
