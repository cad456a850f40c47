"""Durable jobs on the database: kinds with typed payloads (``kinds``), retry policies
(``retry``), and the worker that runs them (``worker``). The SQL is ``storage/jobs.py``."""
