"""The shared imaging core: value types (Volume, Raster), storage (atomic stores, partition listing), asset names, stage results, errors, limits and privacy. No dagster import here."""
