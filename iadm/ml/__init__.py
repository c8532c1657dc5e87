"""Models: datasets, training, evaluation, the registry, and the hybrid verdict."""
