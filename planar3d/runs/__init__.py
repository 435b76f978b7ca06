"""Many trainings: seeds, cross-validation grids, their summaries, launchers (local, SLURM)."""
