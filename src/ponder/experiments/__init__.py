"""Experiments: sweeps over tasks x strategies x budgets, their store, curves and report."""
