"""Pipeline stages as plain functions over partition stores (imaging core; no dagster import).

Each stage reads the upstream partition's Zarr store, runs imaging functions, writes its own store
atomically and returns a :class:`StageResult` that the dagster layer turns into metadata and checks.
"""
