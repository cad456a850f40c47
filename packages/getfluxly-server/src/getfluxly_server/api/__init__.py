"""HTTP: parse, authenticate, call the domain, render. No SQL here."""
