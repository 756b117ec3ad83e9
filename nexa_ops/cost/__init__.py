"""Cost: estimates before submitting, books per run, actual cost, reports (``docs/cost.md``)."""
