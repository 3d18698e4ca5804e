"""TFDS builder for RAVDESS: `import tfds_ravdess` registers the `ravdess` dataset.

See `tfds_ravdess/README.md` and `ravdess_dataset_builder.py`.
"""
from tfds_ravdess import ravdess_dataset_builder
from tfds_ravdess.ravdess_dataset_builder import Builder

__all__ = ["Builder", "ravdess_dataset_builder"]
