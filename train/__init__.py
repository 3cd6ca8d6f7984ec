"""Dataset loaders, feature cache, training, evaluation and export."""
