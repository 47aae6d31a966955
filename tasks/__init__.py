"""tunedex stages: pure functions first, thin Prefect task wrappers last."""
