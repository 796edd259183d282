"""Programmatic verifiers and task generators (the ground truth of every experiment)."""
