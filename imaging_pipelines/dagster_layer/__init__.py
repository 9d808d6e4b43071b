"""Dagster wiring: asset factories, partitions, sensors and resources built from the data catalog."""
