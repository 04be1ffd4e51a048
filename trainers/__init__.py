"""Training, compression, packing and measurement. Knows nothing of Optuna or MLflow."""
