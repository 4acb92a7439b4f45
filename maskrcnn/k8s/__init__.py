"""Kubernetes: MPIJob builder and runner, gated deploy with rollback."""
