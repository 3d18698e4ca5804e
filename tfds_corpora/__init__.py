"""TFDS builders of emotional-speech corpora, sharing one feature schema.

`import tfds_corpora` registers `ser_tess`, `ser_savee`, `ser_emodb` and `ser_crema_d`
(`import tfds_ravdess` registers `ravdess`). The `ser_` prefix keeps them apart from
the TensorFlow Datasets catalog's own `savee` and `crema_d` (raw-audio builders that
need TensorFlow): a missing import fails loudly instead of silently loading TFDS's.
Shared machinery: `builder` (TFDS base class, schema), `sources` (finding files),
`extract` (decoding + features in a process pool); the emotion vocabulary is
`ser_jax.labels.VOCABULARY`.
"""
from tfds_corpora.crema_d import crema_d_dataset_builder
from tfds_corpora.emodb import emodb_dataset_builder
from tfds_corpora.savee import savee_dataset_builder
from tfds_corpora.tess import tess_dataset_builder

BUILDERS = {b.Builder.name: b.Builder for b in (
    tess_dataset_builder, savee_dataset_builder, emodb_dataset_builder,
    crema_d_dataset_builder)}
