"""TFDS's `build` command without TensorFlow, with every corpus builder registered.

TFDS 4.9.10's `tfds` entry point imports TensorFlow at start-up (for its
`convert_format` command), so `tfds build` fails where TensorFlow is not installed.
`run` parses the same flags (--config, --data_dir, --manual_dir, --register_checksums,
--overwrite, ...) and runs the same command. `python -m tfds_corpora` and
`python -m tfds_ravdess` call it.
"""
import dataclasses
import sys

from absl import app
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils

import tfds_corpora  # pylint: disable=unused-import  # registers ser_tess, ...
import tfds_ravdess  # pylint: disable=unused-import  # registers ravdess


def run(default_dataset: str | None = None) -> None:
  """Runs `tfds build` on the command line's datasets (or `default_dataset`)."""
  parse = cli_utils.make_flags_parser(
      build.Args, description="Build ser-jax's TFDS datasets (tfds build, no TensorFlow)")

  def parse_flags(argv: list[str]) -> build.Args:
    args = parse(argv)
    if not args.positional_datasets and not args.datasets:
      if default_dataset is None:
        raise app.UsageError("name the dataset to build, e.g. ser_savee: one of "
                             + ", ".join(["ravdess", *tfds_corpora.BUILDERS]))
      args = dataclasses.replace(args, datasets=[default_dataset])
    return args

  app.run(lambda args: args.execute(), argv=sys.argv, flags_parser=parse_flags)
