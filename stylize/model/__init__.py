"""The network: its layers, its norms, its fast inference form, and its files (models, checkpoints)."""
