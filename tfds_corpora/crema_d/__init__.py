"""`ser_crema_d`: CREMA-D as log-mels (see crema_d_dataset_builder.py)."""
