r"""Tags audio files with AudioSet labels: a thin launcher over `ser_jax.inference.run_tagging`.

  # once: import EfficientAT mn04 with its class list (no PyTorch needed)
  python launch/import_weights.py --checkpoint=mn04_as_mAP_432.pt --source=efficientat_mn \
      --model=efficientat_mn04 --num_classes=527 --frontend=efficientat32k \
      --labels=class_labels_indices.csv --output=imported/mn04_as
  python launch/tag.py --weights=imported/mn04_as clip.wav recordings/ --top_k=3
  python launch/tag.py --weights=imported/mn04_as 'data/**/*.wav' --format=json

Prints, per file, the top --top_k labels by sigmoid score (AudioSet is multi-label: the
scores are independent, not a distribution). The model, its classes and front end come from
the import directory (or --config), the labels from its `class_labels_indices.csv` (or
--labels). Each clip is seen whole: audio of any rate, channel count and length goes
through the one clip -> features path (`ser_jax.features.clip_to_features`), and clips are
padded to the longest one with the padding left out of the pooling. Inputs, --pattern and
--skip_errors work as in launch/predict.py. Logs go to stderr.
"""

import json

from absl import app
from absl import flags

from ser_jax import config_lib
from ser_jax import errors

_CONFIG = config_lib.define_config_flag(
    'Experiment config file; default: what the --weights directory records.',
    lock_config=False)
_WEIGHTS = flags.DEFINE_string('weights', None, 'The tagger: a launch/import_weights.py '
                               'directory (or a weights file with --config and '
                               '--config.init.source).')
_LABELS = flags.DEFINE_string('labels', None, 'Class list (AudioSet class_labels_indices.csv); '
                              'default: the one in the --weights directory.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Labels printed per file.')
_FORMAT = flags.DEFINE_enum('format', 'table', ['table', 'json'], 'Output format on stdout.')
_PATTERN = flags.DEFINE_string('pattern', '*.wav', 'File pattern searched in folders (any case).')
_SKIP_ERRORS = flags.DEFINE_boolean('skip_errors', False, 'Tag the readable files and list '
                                    'the missing/undecodable ones instead of stopping.')
flags.mark_flags_as_required(['weights'])


def main(argv):
  config_lib.quiet_logging_unless_asked()
  from ser_jax import inference  # pylint: disable=g-import-not-at-top
  with errors.exit_on_user_error('tag.py'):
    doc = inference.run_tagging(
        argv[1:], weights=_WEIGHTS.value, config=_CONFIG.value, labels_file=_LABELS.value,
        k=_TOP_K.value, pattern=_PATTERN.value, skip_errors=_SKIP_ERRORS.value)
  print(json.dumps(doc, indent=2) if _FORMAT.value == 'json' else inference.format_tags(doc))


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
