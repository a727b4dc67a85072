"""transferlab: transfer-learning measurement pipeline."""
