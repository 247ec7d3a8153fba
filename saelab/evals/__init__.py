"""Evaluations of SAEs: core metrics, feature dashboards, supervised dictionaries (IOI), attention SAEs."""
