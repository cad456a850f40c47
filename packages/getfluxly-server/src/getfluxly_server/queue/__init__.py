"""Durable jobs on the database, and the worker that runs them."""
