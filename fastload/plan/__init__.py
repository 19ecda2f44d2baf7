"""What to read: options, samplers, distributed ranks, datasets and the batch planner."""
