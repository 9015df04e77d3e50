"""Meta-learning: the MAML family on torch.func, pretraining, checkpoints and adaptation."""
