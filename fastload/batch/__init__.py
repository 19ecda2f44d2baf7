"""What a batch becomes: layout choice, the collate kernel's plans, ragged batches, torch views."""
