"""`ser_savee`: SAVEE as log-mels (see savee_dataset_builder.py)."""
