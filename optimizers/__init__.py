"""Optimizers for aldsl programs: Optuna search, Prompt-OIRL, fine-tuning, reports."""
