"""Rules of the platform, free of HTTP and SQL: tenancy, keys, providers, delivery jobs."""
