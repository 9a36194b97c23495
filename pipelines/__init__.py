"""Prefect flows and deployments: thin wrappers that run the flywheel library."""
