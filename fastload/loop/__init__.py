"""The loading loop: the DataLoader, its epochs, worker processes, output stages, auto-tuning."""
