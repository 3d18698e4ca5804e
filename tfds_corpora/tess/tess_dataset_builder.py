"""The `ser_tess` TFDS builder: the Toronto emotional speech set as log-mel spectrograms.

TESS (Dupuis & Pichora-Fuller 2010): two female speakers, OAF (older) and YAF (younger),
say 200 words in a carrier phrase in 7 emotions: 2800 clips, 24414 Hz mono. The layout
as distributed is one folder per speaker and emotion holding `<speaker>_<word>_<emotion>.wav`,
e.g. `OAF_angry/OAF_back_angry.wav`; the emotion is the file name's last token (angry,
disgust, fear, happy, neutral, ps = pleasant surprise, sad). Folder spellings vary
(`OAF_Fear`, `OAF_Pleasant_surprise`, `YAF_pleasant_surprised`, `OAF_Sad`): the labels
come from the file name, and a folder whose (normalised) name disagrees with it is a
problem. Two files are AIFF despite the `.wav` name and one is 96 kHz: audio is decoded
by content and resampled to the front end's rate (both logged).

Configs: one per front end (`ser_tess/predecessor48k`, ...). Audio from `--manual_dir` or
`$TESS_DIR` (a folder or a zip, e.g. the Borealis "download all" zip or a Kaggle copy).
"""

import re
from collections.abc import Mapping, Sequence

import tensorflow_datasets as tfds

from tfds_corpora import builder as builder_lib
from tfds_corpora import sources as sources_lib

HOMEPAGE = "https://doi.org/10.5683/SP2/E8H2MF"
SPEAKERS = ("OAF", "YAF")
# The file name's emotion token -> the shared vocabulary.
EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
            "neutral": "neutral", "ps": "surprised", "sad": "sad"}
# Folder spellings of the distribution -> the file name's token.
_FOLDER_EMOTIONS = {**{e: e for e in EMOTIONS}, "pleasant_surprise": "ps",
                    "pleasant_surprised": "ps"}
_NAME_RE = re.compile(r"^([A-Za-z]{3})_([A-Za-z]+)_([A-Za-z]+)\.wav$", re.IGNORECASE)
_FOLDER_RE = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)


def parse_path(parts: Sequence[str], where: str,
               side: Mapping[str, bytes]) -> sources_lib.Labels | None:
  """Labels of `<speaker>_<word>_<emotion>.wav`; None for other names."""
  del side
  m = _NAME_RE.match(parts[-1])
  if not m:
    return None
  speaker, word, token = m.group(1).upper(), m.group(2).lower(), m.group(3).lower()
  if speaker not in SPEAKERS:
    raise sources_lib.CorpusInputError(
        f"{where}: speaker '{m.group(1)}' is not a TESS speaker (expected OAF or YAF)")
  if token not in EMOTIONS:
    raise sources_lib.CorpusInputError(
        f"{where}: emotion '{m.group(3)}' is not a TESS emotion (expected one of "
        f"{', '.join(EMOTIONS)})")
  folder = _FOLDER_RE.match(parts[-2]) if len(parts) > 1 else None
  if folder:
    folder_token = _FOLDER_EMOTIONS.get(folder.group(2).lower())
    if folder.group(1).upper() != speaker or folder_token not in (None, token):
      raise sources_lib.CorpusInputError(
          f"{where}: the name says {speaker} {token} but the file is in {parts[-2]}/; "
          "refusing to guess which label is right")
  return sources_lib.Labels(name=parts[-1], emotion=EMOTIONS[token], corpus_label=token,
                            speaker=speaker, gender="female", extra={"word": word})


CORPUS = sources_lib.Corpus(
    name="tess", title="TESS", parse=parse_path,
    name_pattern="<OAF|YAF>_<word>_<emotion>.wav", homepage=HOMEPAGE)


class Builder(builder_lib.CorpusBuilder):
  """TESS (2 female speakers, 7 emotions, 2800 clips) as full-length log-mels."""

  name = "ser_tess"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download TESS from {HOMEPAGE} (CC BY-NC-ND 4.0) and put its speaker-emotion "
      "folders (OAF_angry/ .. YAF_sad/), or the zip holding them, in the manual dir or "
      "in the folder named by $TESS_DIR (or point $TESS_DIR at the zip).")
  CORPUS = CORPUS
  LANGUAGE = "en"
  LICENSE = "CC BY-NC-ND 4.0"
  EXAMPLE_PATH = "OAF_angry/OAF_back_angry.wav"

  def _extra_features(self) -> dict:
    return {"word": tfds.features.Text()}
