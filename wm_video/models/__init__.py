"""Plain single-device PyTorch models; precision, compile, checkpointing and sharding are applied from training/."""
