"""Sweeps: a sweep file -> tasks -> a run folder -> one Slurm job array, or local runs (``docs/sweep.md``)."""
