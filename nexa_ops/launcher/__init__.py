"""launch: one program, locally, under torchrun, or as a multi-node Slurm job (``docs/launch.md``)."""
