"""Customer identity: canonical identifiers and their unification across channels."""
