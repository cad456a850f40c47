"""Storage: the only package with SQL. Models, the engine, and one repository per noun."""
