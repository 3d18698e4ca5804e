"""The `ser_emodb` TFDS builder: the Berlin Database of Emotional Speech as log-mels.

EmoDB (Burkhardt et al. 2005): 10 German speakers (5 female, 5 male) say 10 sentences
in 7 emotions: 535 clips, 16 kHz, variable length, as distributed in `download.zip`
(`wav/03a01Fa.wav`; its other folders hold labels, not audio). A name is speaker (2
digits), text code (a01 a02 a04 a05 a07 b01 b02 b03 b09 b10), emotion letter (W anger,
L boredom, E disgust, A fear, F happiness, T sadness, N neutral), version letter. Names
with another speaker, text or emotion letter are problems. The speakers' genders are
EmoDB's documented ones.
"""

import re
from collections.abc import Mapping, Sequence

import tensorflow_datasets as tfds

from tfds_corpora import builder as builder_lib
from tfds_corpora import sources as sources_lib

HOMEPAGE = "http://emodb.bilderbar.info/"
SPEAKER_GENDERS = {"03": "male", "08": "female", "09": "female", "10": "male",
                   "11": "male", "12": "male", "13": "female", "14": "female",
                   "15": "male", "16": "female"}
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
# The German emotion word's letter -> the shared vocabulary.
EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful",
            "F": "happy", "T": "sad", "N": "neutral"}
_NAME_RE = re.compile(r"^(\d{2})([a-z]\d{2})([A-Za-z])([a-z])\.wav$")


def parse_path(parts: Sequence[str], where: str,
               side: Mapping[str, bytes]) -> sources_lib.Labels | None:
  """Labels of `<speaker><text><emotion><version>.wav`; None for other names."""
  del side
  m = _NAME_RE.match(parts[-1])
  if not m:
    return None
  speaker, text, letter = m.group(1), m.group(2), m.group(3)
  for field, value, allowed in (("speaker", speaker, SPEAKER_GENDERS),
                                ("text code", text, TEXTS),
                                ("emotion letter", letter, EMOTIONS)):
    if value not in allowed:
      raise sources_lib.CorpusInputError(
          f"{where}: {field} '{value}' is not an EmoDB {field} (expected one of "
          f"{' '.join(allowed)}; names are speaker, text, emotion, version)")
  return sources_lib.Labels(name=parts[-1], emotion=EMOTIONS[letter], corpus_label=letter,
                            speaker=speaker, gender=SPEAKER_GENDERS[speaker],
                            extra={"text": text})


CORPUS = sources_lib.Corpus(
    name="emodb", title="EmoDB", parse=parse_path,
    name_pattern="<speaker><text><emotion><version>.wav, e.g. 03a01Fa.wav",
    homepage=HOMEPAGE, archives=("download.zip",))


class Builder(builder_lib.CorpusBuilder):
  """EmoDB (10 speakers, 7 emotions incl. boredom, 535 clips, German) as log-mels."""

  name = "ser_emodb"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download download.zip from {HOMEPAGE} (free for research use) and put it, or "
      "its extracted wav/ folder, in the manual dir or in the folder named by "
      "$EMODB_DIR (or point $EMODB_DIR at the zip).")
  CORPUS = CORPUS
  LANGUAGE = "de"
  LICENSE = "EmoDB terms: free for research use"
  EXAMPLE_PATH = "wav/03a01Fa.wav"

  def _extra_features(self) -> dict:
    return {"text": tfds.features.Text()}
