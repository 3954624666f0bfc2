"""Execution engines. The execution modes are one table (modetable.py); modes.py maps them to engine classes."""
