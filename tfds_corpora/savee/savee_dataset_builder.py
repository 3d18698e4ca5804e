"""The `ser_savee` TFDS builder: SAVEE's audio as log-mel spectrograms.

SAVEE (Surrey Audio-Visual Expressed Emotion; Haq & Jackson 2009): four male British
English speakers (DC, JE, JK, KL), 7 emotions, 15 sentences per emotion and speaker
(neutral 30): 480 clips at 44.1 kHz. As distributed (`AudioData.zip`, after registration):
`AudioData/<speaker>/<code><nn>.wav`, codes a anger, d disgust, f fear, h happiness,
n neutral, sa sadness, su surprise (e.g. `AudioData/DC/sa03.wav`). Copies that flatten
the folders name the files `<speaker>_<code><nn>.wav` (e.g. `ALL/DC_sa03.wav`); both are
read, and a clip present in both forms is kept once. The stored `file_name` is always
`<speaker>_<code><nn>.wav` (SAVEE's own names repeat across speakers).

The TensorFlow Datasets catalog has its own `savee` builder (raw audio, needs TensorFlow);
this one is registered as `ser_savee` so that the two can never be confused.
"""

import re
from collections.abc import Mapping, Sequence

import tensorflow_datasets as tfds

from tfds_corpora import builder as builder_lib
from tfds_corpora import sources as sources_lib

HOMEPAGE = "http://kahlan.eps.surrey.ac.uk/savee/"
SPEAKERS = ("DC", "JE", "JK", "KL")
# Code -> (the shared vocabulary, sentences per speaker).
CODES = {"a": ("angry", 15), "d": ("disgust", 15), "f": ("fearful", 15),
         "h": ("happy", 15), "n": ("neutral", 30), "sa": ("sad", 15),
         "su": ("surprised", 15)}
_NAME_RE = re.compile(r"^(?:([A-Za-z]{2})_)?([A-Za-z]{1,2})(\d{2})\.wav$")
_SPEAKER_DIR_RE = re.compile(r"^[A-Z]{2}$")


def parse_path(parts: Sequence[str], where: str,
               side: Mapping[str, bytes]) -> sources_lib.Labels | None:
  """Labels of `<speaker>/<code><nn>.wav` or `<speaker>_<code><nn>.wav`; None otherwise."""
  del side
  m = _NAME_RE.match(parts[-1])
  if not m:
    return None
  folder = parts[-2] if len(parts) > 1 else ""
  prefix, code, number = m.group(1), m.group(2).lower(), int(m.group(3))
  if prefix is None and not _SPEAKER_DIR_RE.match(folder):
    return None  # e.g. a stray `a01.wav` outside any speaker folder
  speaker = (prefix or folder).upper()
  if speaker not in SPEAKERS:
    raise sources_lib.CorpusInputError(
        f"{where}: speaker '{prefix or folder}' is not a SAVEE speaker (expected "
        f"{', '.join(SPEAKERS)})")
  if prefix and folder.upper() in SPEAKERS and folder.upper() != speaker:
    raise sources_lib.CorpusInputError(
        f"{where}: the name says speaker {speaker} but the file is in {folder}/; "
        "refusing to guess which label is right")
  if code not in CODES:
    raise sources_lib.CorpusInputError(
        f"{where}: emotion code '{m.group(2)}' is not a SAVEE code (expected one of "
        f"{', '.join(CODES)})")
  emotion, count = CODES[code]
  if not 1 <= number <= count:
    raise sources_lib.CorpusInputError(
        f"{where}: sentence {number:02d} is outside 01..{count:02d} for code '{code}'")
  return sources_lib.Labels(name=f"{speaker}_{code}{number:02d}.wav", emotion=emotion,
                            corpus_label=code, speaker=speaker, gender="male")


CORPUS = sources_lib.Corpus(
    name="savee", title="SAVEE", parse=parse_path,
    name_pattern="<speaker>/<code><nn>.wav or <speaker>_<code><nn>.wav",
    homepage=HOMEPAGE, archives=("AudioData.zip",))


class Builder(builder_lib.CorpusBuilder):
  """SAVEE (4 male speakers, 7 emotions, 480 clips) as full-length log-mels."""

  name = "ser_savee"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Register at {HOMEPAGE} (free for research use) and put AudioData.zip (in the "
      "download's Data/Zip/), or its extracted AudioData/ folder (DC/ JE/ JK/ KL/), in "
      "the manual dir or in the folder named by $SAVEE_DIR (or point $SAVEE_DIR at the "
      "zip).")
  CORPUS = CORPUS
  LANGUAGE = "en"
  LICENSE = "SAVEE licence: free for research use, registration required"
  EXAMPLE_PATH = "AudioData/DC/a01.wav"
