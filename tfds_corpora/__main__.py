"""`python -m tfds_corpora DATASET [tfds build flags]`: build a corpus without TensorFlow.

  python -m tfds_corpora ser_savee --config=predecessor48k --data_dir=~/tensorflow_datasets \
      --manual_dir=/path/to/AudioData.zip

DATASET is ser_tess, ser_savee, ser_emodb, ser_crema_d or ravdess; no --config builds
every front end. Where TensorFlow is installed, `tfds build ser_savee
--imports=tfds_corpora` is equivalent.
"""
from tfds_corpora import cli

if __name__ == "__main__":
  cli.run()
