"""Runs: the registry's training runs, their loss curves and evaluations, and runs side by side."""
