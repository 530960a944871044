"""Tuning with MetaSchedule: the run, its database and provenance, seeding, budget policy, checkpoints, report, builder."""
