"""tunedex flows (recipes that chain tasks) and the `tunedex` CLI."""
