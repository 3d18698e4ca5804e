"""`ser_tess`: TESS as log-mels (see tess_dataset_builder.py)."""
