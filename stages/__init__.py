"""Processing cores, one module per pipeline stage."""
