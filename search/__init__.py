"""The study: Hydra config -> Optuna trials -> trainers -> MLflow record -> Pareto front."""
