"""Pure planning: sweep definition -> tasks -> sbatch text -> cost. No tools, no side effects."""
