"""`python -m tfds_ravdess [tfds build flags]`: TFDS's `build` command, without TensorFlow.

TFDS 4.9.10's `tfds` entry point imports TensorFlow at start-up (for its
`convert_format` command), so `tfds build` fails where TensorFlow is not installed.
This runs the same `build` command (the same flags: --config, --data_dir, --manual_dir,
--register_checksums, --overwrite, ...) with `ravdess` registered and as the default
dataset, e.g.

  python -m tfds_ravdess --config=speech_predecessor48k --data_dir=~/tensorflow_datasets \
      --manual_dir=/path/to/RAVDESS   # zips or Actor_NN/ folders; omit to download

Where TensorFlow is installed, `tfds build ravdess --imports=tfds_ravdess` is equivalent.
"""
import dataclasses
import sys

from absl import app
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils

import tfds_ravdess  # pylint: disable=unused-import  # registers 'ravdess'

_parse = cli_utils.make_flags_parser(
    build.Args, description="Build the ravdess TFDS dataset (tfds build, no TensorFlow)")


def _parse_flags(argv: list[str]) -> build.Args:
  args = _parse(argv)
  if not args.positional_datasets and not args.datasets:
    args = dataclasses.replace(args, datasets=["ravdess"])
  return args


def main(args: build.Args) -> None:
  args.execute()


if __name__ == "__main__":
  app.run(main, argv=sys.argv, flags_parser=_parse_flags)
