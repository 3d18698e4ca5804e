"""The label vocabulary every corpus builder shares (no TFDS, no TensorFlow).

`emotion` is one ClassLabel across corpora: RAVDESS's 8 emotions in RAVDESS's order
(ids 0..7, so RAVDESS-trained models keep their class ids), then what other corpora add
(EmoDB's boredom). Each builder maps its corpus's own codes into it and also stores the
code itself (`corpus_label`). `CORPUS_EMOTIONS` says which emotions each corpus has: the
classes a cross-corpus evaluation can score.
"""

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
            "surprised", "boredom")
GENDERS = ("male", "female", "unknown")

# Emotions present in each corpus (RAVDESS song has the first six only).
CORPUS_EMOTIONS = {
    "ravdess": EMOTIONS[:8],
    "tess": ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    "savee": ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    "emodb": ("neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom"),
    "crema_d": ("neutral", "happy", "sad", "angry", "fearful", "disgust"),
}


def speaker_id(corpus: str, speaker: str) -> str:
  """The globally unique speaker string stored in `speaker`, e.g. 'savee:DC'."""
  return f"{corpus}:{speaker}"
