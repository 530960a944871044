"""Graph passes in numbered phases: fusion (stock and DC-AC patterns), vector exp, and what fusion changes (explain)."""
