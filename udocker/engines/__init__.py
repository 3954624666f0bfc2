"""Execution engines. The legacy udocker mode names map to engine classes in one table (MODES)."""
