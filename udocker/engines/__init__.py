"""Execution engines. The execution modes are one table (udocker/modetable.py); modes.py maps them to engine classes."""
