"""Compute profiles of a workload for hardware co-design (`ponder profile`): the engine's measured steps, their
FLOPs and bytes, the machine's ceilings, a fitted step-time model, and predictions for other hardware."""
