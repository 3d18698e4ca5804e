"""`ser_emodb`: EmoDB as log-mels (see emodb_dataset_builder.py)."""
