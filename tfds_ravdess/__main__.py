"""`python -m tfds_ravdess [tfds build flags]`: TFDS's `build` command, without TensorFlow.

TFDS 4.9.10's `tfds` entry point imports TensorFlow at start-up (for its
`convert_format` command), so `tfds build` fails where TensorFlow is not installed.
This runs the same `build` command (the same flags: --config, --data_dir, --manual_dir,
--register_checksums, --overwrite, ...) with `ravdess` as the default dataset, e.g.

  python -m tfds_ravdess --config=speech_predecessor48k --data_dir=~/tensorflow_datasets \
      --manual_dir=/path/to/RAVDESS   # zips, Actor_NN/ folders or one zip; omit to download

Where TensorFlow is installed, `tfds build ravdess --imports=tfds_ravdess` is equivalent.
"""
from tfds_corpora import cli

if __name__ == "__main__":
  cli.run("ravdess")
