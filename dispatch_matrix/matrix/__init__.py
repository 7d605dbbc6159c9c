"""Everything that speaks Matrix: the nio client, the sync loop, trust, formatting."""
