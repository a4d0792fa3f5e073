"""The signgd version (its own module, so that modules signgd's ``__init__`` imports can read it)."""
VERSION = "0.1.0"
