"""Finding a corpus's audio files in folders and zip archives (no TFDS, no TensorFlow).

A `Corpus` says how to label a file from its path (`parse`) and which archive names its
distribution uses; `scan` walks a folder (or reads one zip), labels every audio file and
collects every problem in a `Problems` instead of stopping at the first, so that one
build reports them all. The same policy holds for every corpus, so nothing is ever
mislabelled and nothing bad is silently used:

- A file whose name is not the corpus's pattern (`parse` returns None: `notes.wav`,
  `x (1).wav`) is skipped; one warning lists such files.
- A name in the corpus's pattern with impossible values (RAVDESS emotion 09, a file in
  `Actor_05/` named for actor 07) is a problem: it claims to be the corpus but can't be
  labelled.
- The same clip name twice: byte-identical copies (CRC-32) are kept once with one warning;
  copies that differ are a problem naming both places.
- Archives: a zip with one of the corpus's official names, or given as the root itself,
  is read, and anything wrong in it is a problem ("re-download"); official archives of
  the distribution that hold no audio (RAVDESS video) are skipped with a warning; any
  other zip is read when it holds files of the corpus, else skipped with a warning.
  Other archive types (.tar.gz, .7z, .rar) are skipped with a warning to extract them.
- Decoding problems (undecodable, truncated, NaN/Inf, a corrupt zip member) are found
  when the files are decoded (`tfds_corpora.extract`) and reported the same way.
"""

import collections
import dataclasses
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ser_jax import errors

log = logging.getLogger(__name__)

_UNREAD_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")
_MAX_LISTED = 50  # per kind of problem, in one error message


class CorpusInputError(errors.UserError):
  """Bad input data: the message names every bad file and what is wrong with it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Labels:
  """What a file's path says about its clip, in the shared schema's terms."""
  name: str  # unique within the corpus; stored as `file_name`, e.g. 'DC_a01.wav'
  emotion: str  # in ser_jax.labels.VOCABULARY
  corpus_label: str  # the corpus's own code, e.g. 'sa', 'W', 'ANG', '05'
  speaker: str  # within the corpus, e.g. 'DC'; stored as 'savee:DC'
  gender: str = "unknown"  # in ser_jax.labels.GENDERS
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # corpus features


# parse(path parts, location for messages, side files by name) -> Labels, or None when
# the name is not the corpus's pattern; raises CorpusInputError for impossible values.
Parser = Callable[[Sequence[str], str, Mapping[str, bytes]], "Labels | None"]


@dataclasses.dataclass(frozen=True)
class Corpus:
  """How one corpus is distributed and labelled."""
  name: str  # e.g. 'savee': the `corpus` feature and the speaker prefix
  title: str  # e.g. 'SAVEE', in messages
  parse: Parser
  name_pattern: str  # what a valid file name looks like, for messages
  homepage: str
  archives: tuple[str, ...] = ()  # official archive names holding the audio
  # (regex over the file name, what it is): official archives without audio, skipped.
  other_archives: tuple[tuple[str, str], ...] = ()
  side_files: tuple[str, ...] = ()  # metadata files given to `parse`, e.g. demographics
  extensions: tuple[str, ...] = (".wav",)


class ArchiveMemberError(CorpusInputError):
  """A zip member could not be read (bad CRC, truncated archive)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """Where one clip's bytes are: a file on disk, or a member of a zip."""
  labels: Labels
  path: str  # the file, or the zip archive
  member: str | None = None  # the zip member, None for a plain file
  crc32: int | None = None  # zip members carry their CRC-32

  @property
  def name(self) -> str:
    return self.labels.name

  @property
  def location(self) -> str:
    return f"{self.path}!{self.member}" if self.member else self.path

  def read_bytes(self) -> bytes:
    if self.member is None:
      with open(self.path, "rb") as f:
        return f.read()
    return read_member(self.path, self.member)

  def content_crc32(self) -> int:
    if self.crc32 is not None:
      return self.crc32
    return zlib.crc32(self.read_bytes())


def read_member(zip_path: str, member: str) -> bytes:
  """A zip member's bytes; ArchiveMemberError (naming both, "re-download") if damaged."""
  try:
    with zipfile.ZipFile(zip_path) as z:
      return z.read(member)  # checks the CRC-32
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
    raise ArchiveMemberError(
        f"{zip_path}!{member}: the archive member is damaged ({e}); re-download "
        f"{os.path.basename(zip_path)}") from e


class Problems:
  """Problem files found so far, grouped by kind, for one error at the end."""

  def __init__(self):
    self._by_kind: dict[str, list[str]] = collections.defaultdict(list)

  def add(self, kind: str, message: str) -> None:
    self._by_kind[kind].append(message)

  def __len__(self) -> int:
    return sum(len(v) for v in self._by_kind.values())

  def kinds(self) -> dict[str, int]:
    return {k: len(v) for k, v in self._by_kind.items()}

  def error(self, title: str, root: str, outcome: str = "") -> CorpusInputError:
    """One error listing every problem (up to 50 per kind), grouped by kind.

    Args:
      title: the corpus, e.g. 'SAVEE'.
      root: where the files were looked for.
      outcome: what happened because of them, e.g. 'nothing was built'.
    """
    lines = [f"{title}: {len(self)} problem file(s) in {root}"
             + (f"; {outcome}" if outcome else "") + ". Fix or remove them and run again:"]
    for kind in sorted(self._by_kind):
      messages = self._by_kind[kind]
      lines.append(f"  {kind} ({len(messages)}):")
      lines += [f"    {m}" for m in messages[:_MAX_LISTED]]
      if len(messages) > _MAX_LISTED:
        lines.append(f"    ... and {len(messages) - _MAX_LISTED} more")
    return CorpusInputError("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class _Entry:
  """A candidate audio file before it is labelled."""
  parts: tuple[str, ...]  # path components (absolute for files, the member's for zips)
  path: str
  member: str | None = None
  crc32: int | None = None

  @property
  def location(self) -> str:
    return f"{self.path}!{self.member}" if self.member else self.path


@dataclasses.dataclass
class _Group:
  """The candidates of one container: the folder tree, or one zip."""
  archive: str | None  # None: loose files
  strict: bool  # problems inside are reported (official or explicitly given archive)
  entries: list[_Entry]


def _files(root: str) -> Iterator[str]:
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for fname in sorted(filenames):
      yield os.path.join(dirpath, fname)


def _is_junk(parts: Sequence[str]) -> bool:
  """macOS resource forks and archive metadata, never audio."""
  return parts[0] == "__MACOSX" or parts[-1].startswith("._")


def _zip_group(path: str, corpus: Corpus, problems: Problems, side: dict[str, bytes],
               strict: bool) -> _Group | None:
  """The candidates in one zip, or None when the zip is skipped."""
  base = os.path.basename(path)
  for pattern, what in corpus.other_archives:
    if re.fullmatch(pattern, base, re.IGNORECASE):
      log.warning("Skipping %s: %s (no %s audio)", path, what, corpus.title)
      return None
  strict = strict or base.lower() in {a.lower() for a in corpus.archives}
  try:
    z = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    if strict:
      problems.add("unreadable archive",
                   f"{path}: not a readable zip archive ({e}); re-download it from "
                   f"{corpus.homepage}")
    else:
      log.warning("Skipping %s: not a readable zip archive (%s)", path, e)
    return None
  entries = []
  with z:
    for zi in z.infolist():
      parts = tuple(zi.filename.split("/"))
      if zi.is_dir() or _is_junk(parts):
        continue
      if parts[-1] in corpus.side_files:
        try:
          side[parts[-1]] = read_member(path, zi.filename)
        except ArchiveMemberError as e:
          problems.add("damaged archive member", str(e))
      elif parts[-1].lower().endswith(corpus.extensions):
        entries.append(_Entry(parts, path, zi.filename, zi.CRC))
  return _Group(path, strict, entries)


def _groups(root: str, corpus: Corpus, problems: Problems,
            side: dict[str, bytes]) -> list[_Group]:
  if os.path.isfile(root):
    if not root.lower().endswith(".zip"):
      raise CorpusInputError(f"{root}: expected a folder or a .zip archive of "
                             f"{corpus.title} audio, got another kind of file")
    group = _zip_group(root, corpus, problems, side, strict=True)
    return [group] if group else []
  loose = _Group(None, True, [])
  groups = [loose]
  for path in _files(root):
    base, low = os.path.basename(path), os.path.basename(path).lower()
    if base.startswith("._"):
      continue
    if low.endswith(".zip"):
      group = _zip_group(path, corpus, problems, side, strict=False)
      if group:
        groups.append(group)
    elif low.endswith(_UNREAD_ARCHIVES):
      log.warning("Skipping %s: only .zip archives are read; extract it into %s", path,
                  root)
    elif base in corpus.side_files:
      with open(path, "rb") as f:
        side[base] = f.read()
    elif low.endswith(corpus.extensions):
      loose.entries.append(_Entry(tuple(os.path.abspath(path).split(os.sep)), path))
  return groups


def scan(root: str | os.PathLike, corpus: Corpus, problems: Problems,
         wanted: Callable[[Labels], bool] = lambda labels: True) -> list[Source]:
  """Labels every audio file of `corpus` under `root`, collecting problems.

  Args:
    root: a folder holding the corpus (extracted and/or zips, at any depth), or a zip.
    corpus: the corpus description.
    problems: collects every problem found (see the module docstring).
    wanted: keeps only the clips it accepts (e.g. one RAVDESS subset).

  Returns:
    One Source per distinct clip, sorted by clip name (problem files left out).

  Raises:
    CorpusInputError: `root` is a file that is not a zip.
  """
  root = os.fspath(root)
  side: dict[str, bytes] = {}
  groups = _groups(root, corpus, problems, side)
  sources, skipped = [], []
  for group in groups:
    found, bad, unnamed = [], [], []
    for entry in group.entries:
      try:
        labels = corpus.parse(entry.parts, entry.location, side)
      except CorpusInputError as e:
        bad.append(str(e))
        continue
      if labels is None:
        unnamed.append(entry.location)
      else:
        found.append(Source(labels, entry.path, entry.member, entry.crc32))
    if group.archive is not None and not found and not bad:
      if not group.strict:
        log.warning("Skipping %s: it holds no %s audio files (%s)", group.archive,
                    corpus.title, corpus.name_pattern)
        continue
      problems.add("not an audio archive of the corpus",
                   f"{group.archive}: not a {corpus.title} audio archive (no "
                   f"{corpus.name_pattern} files inside); expected "
                   f"{' or '.join(corpus.archives) or 'the corpus'} from {corpus.homepage}")
    elif group.archive is not None and not group.strict:
      log.info("Reading %s %s clips from %s", len(found), corpus.title, group.archive)
    for message in bad:
      problems.add(f"impossible {corpus.title} file name", message)
    skipped += unnamed
    sources += [s for s in found if wanted(s.labels)]
  if skipped:
    log.warning("Skipping %d file(s) whose name is not a %s file name (%s), e.g. %s",
                len(skipped), corpus.title, corpus.name_pattern, "; ".join(skipped[:10]))
  return drop_duplicates(sources, problems)


def drop_duplicates(candidates: Sequence[Source], problems: Problems) -> list[Source]:
  """One Source per clip name, sorted by name; differing copies are problems."""
  by_name: dict[str, list[Source]] = {}
  for s in candidates:
    by_name.setdefault(s.name, []).append(s)
  result, examples, num_dups = [], [], 0
  for name in sorted(by_name):
    # Plain files first: faster to read than zip members.
    copies = sorted(by_name[name], key=lambda s: (s.member is not None, s.location))
    if len(copies) > 1:
      first = copies[0].content_crc32()
      differ = [c for c in copies[1:] if c.content_crc32() != first]
      if differ:
        problems.add("the same clip twice with different contents",
                     f"{name} is present twice with different contents: "
                     f"{copies[0].location} and {differ[0].location}; remove one")
        continue
      num_dups += 1
      if len(examples) < 3:
        examples.append(" = ".join(c.location for c in copies))
    result.append(copies[0])
  if num_dups:
    log.warning("%d file names appear more than once with identical contents; using one "
                "copy of each (e.g. %s)", num_dups, "; ".join(examples))
  return result


def placement_help(root: str, title: str, archives: Sequence[str], homepage: str,
                   example: str) -> str:
  """Says which files to put where, e.g. for a missing or empty folder."""
  what = (f"{' and/or '.join(archives)} (from {homepage}), or the extracted {title} files,"
          if archives else f"the {title} files (from {homepage})")
  return (f"Put {what} in {root} (e.g. {os.path.join(root, example)}); a path to the zip "
          "itself works too.")
