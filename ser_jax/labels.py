"""Class names: the one definition of RAVDESS's emotion labels and how classes are named.

RAVDESS file names number the emotions 01..08; label i is `EMOTIONS[i]` (the TFDS
builder's `emotion` ClassLabel, training targets, reports and predictions all use it).
"""

EMOTIONS = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised')


def class_names(num_classes: int) -> list[str]:
  """The emotion names for an 8-class model, else `class_<i>`."""
  num_classes = int(num_classes)
  if num_classes == len(EMOTIONS):
    return list(EMOTIONS)
  return [f'class_{i}' for i in range(num_classes)]
