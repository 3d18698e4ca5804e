"""Class names: the one definition of the emotion labels and how classes are named.

RAVDESS file names number the emotions 01..08; label i is `EMOTIONS[i]`. Every corpus
builder (`tfds_ravdess`, `tfds_corpora`) stores `emotion` as one ClassLabel over
`VOCABULARY`: RAVDESS's 8 in its order (so RAVDESS-trained models keep their class ids),
then what other corpora add (EmoDB's boredom, id 8). A model's class `i` is
`VOCABULARY[i]` whatever its width: an 8-class model knows `EMOTIONS`, a 9-class one also
boredom. `CORPUS_EMOTIONS` says which emotions each corpus has: the classes a cross-corpus
evaluation can score.
"""

EMOTIONS = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised')
VOCABULARY = EMOTIONS + ('boredom',)
GENDERS = ('male', 'female', 'unknown')

# Emotions present in each corpus (RAVDESS song has the first six only).
CORPUS_EMOTIONS = {
    'ravdess': EMOTIONS,
    'tess': ('neutral', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised'),
    'savee': ('neutral', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised'),
    'emodb': ('neutral', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'boredom'),
    'crema_d': ('neutral', 'happy', 'sad', 'angry', 'fearful', 'disgust'),
}


def class_names(num_classes: int) -> list[str]:
  """The emotion names of a model's classes (`VOCABULARY[:n]`, n 8 or 9), else `class_<i>`."""
  num_classes = int(num_classes)
  if num_classes in (len(EMOTIONS), len(VOCABULARY)):
    return list(VOCABULARY[:num_classes])
  return [f'class_{i}' for i in range(num_classes)]


def speaker_id(corpus: str, speaker: str) -> str:
  """The globally unique speaker string the builders store in `speaker`, e.g. 'savee:DC'."""
  return f'{corpus}:{speaker}'
