"""The `ser_crema_d` TFDS builder: CREMA-D's audio as log-mel spectrograms.

CREMA-D (Cao et al. 2014): 91 actors (1001-1091) say 12 sentences in 6 emotions: 7442
clips, 16 kHz, distributed in the GitHub repository's `AudioWAV/` folder (Git LFS: a
clone without `git lfs pull`, or GitHub's "Download ZIP", holds pointer files instead of
audio, which the build reports as such). Names are `<actor>_<sentence>_<emotion>_<level>.wav`,
e.g. `1001_DFA_ANG_XX.wav`: sentence IEO TIE IOM IWW TAI MTI IWL ITH DFA ITS TSI WSI,
emotion ANG DIS FEA HAP NEU SAD, level LO MD HI or XX (unspecified). Older copies name
one file `1040_ITH_SAD_X.wav`; it is read as `1040_ITH_SAD_XX.wav` (the repository's
fix). The repository's `VideoDemographics.csv` (ActorID, Age, Sex, ...) gives the
actors' genders when it is found next to the audio; otherwise gender is 'unknown'.

The TensorFlow Datasets catalog has its own `crema_d` builder (raw audio, needs
TensorFlow); this one is registered as `ser_crema_d` so the two can never be confused.
"""

import csv
import functools
import io
import logging
import re
from collections.abc import Mapping, Sequence

import tensorflow_datasets as tfds

from tfds_corpora import builder as builder_lib
from tfds_corpora import sources as sources_lib

log = logging.getLogger(__name__)

HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
ACTORS = range(1001, 1092)
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI",
             "WSI")
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy",
            "NEU": "neutral", "SAD": "sad"}
LEVELS = ("LO", "MD", "HI", "XX")
DEMOGRAPHICS = "VideoDemographics.csv"
_NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})\.wav$", re.IGNORECASE)


@functools.lru_cache(maxsize=4)
def read_demographics(data: bytes) -> dict[str, str]:
  """Actor id -> 'male'/'female' from VideoDemographics.csv (ActorID, Age, Sex, ...)."""
  genders = {}
  for row in csv.DictReader(io.StringIO(data.decode("utf-8-sig"))):
    sex = (row.get("Sex") or "").strip().lower()
    if sex in ("male", "female"):
      genders[(row.get("ActorID") or "").strip()] = sex
  return genders


def parse_path(parts: Sequence[str], where: str,
               side: Mapping[str, bytes]) -> sources_lib.Labels | None:
  """Labels of `<actor>_<sentence>_<emotion>_<level>.wav`; None for other names."""
  m = _NAME_RE.match(parts[-1])
  if not m:
    return None
  actor, sentence, code, level = m.group(1), *(g.upper() for g in m.groups()[1:])
  if level == "X":  # the repository's misnamed 1040_ITH_SAD_X.wav, fixed there in 2022
    log.info("%s: level X read as XX", where)
    level = "XX"
  for field, value, allowed in (("actor", actor, [str(a) for a in ACTORS]),
                                ("sentence", sentence, SENTENCES),
                                ("emotion", code, EMOTIONS), ("level", level, LEVELS)):
    if value not in allowed:
      shown = "1001..1091" if field == "actor" else " ".join(allowed)
      raise sources_lib.CorpusInputError(
          f"{where}: {field} '{value}' is not a CREMA-D {field} (expected {shown}; "
          "names are actor_sentence_emotion_level)")
  genders = read_demographics(side[DEMOGRAPHICS]) if DEMOGRAPHICS in side else {}
  return sources_lib.Labels(
      name=f"{actor}_{sentence}_{code}_{level}.wav", emotion=EMOTIONS[code],
      corpus_label=code, speaker=actor, gender=genders.get(actor, "unknown"),
      extra={"sentence": sentence, "level": level})


CORPUS = sources_lib.Corpus(
    name="crema_d", title="CREMA-D", parse=parse_path,
    name_pattern="<actor>_<sentence>_<emotion>_<level>.wav, e.g. 1001_DFA_ANG_XX.wav",
    homepage=HOMEPAGE, side_files=(DEMOGRAPHICS,))


class Builder(builder_lib.CorpusBuilder):
  """CREMA-D (91 actors, 6 emotions, 7442 clips) as full-length log-mels."""

  name = "ser_crema_d"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Clone {HOMEPAGE} with Git LFS (git lfs install; git clone ...; or `git lfs pull` "
      "in an existing clone) and put its AudioWAV/ folder and VideoDemographics.csv (or "
      "the whole clone) in the manual dir or in the folder named by $CREMA_D_DIR.")
  CORPUS = CORPUS
  LANGUAGE = "en"
  LICENSE = "Open Database License (ODbL) v1.0; contents: Database Contents License"
  EXAMPLE_PATH = "AudioWAV/1001_DFA_ANG_XX.wav"

  def _extra_features(self) -> dict:
    return {"sentence": tfds.features.Text(), "level": tfds.features.Text()}
