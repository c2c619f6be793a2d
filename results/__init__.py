"""Results: the JSON Lines record store, tables, plots and the report."""
