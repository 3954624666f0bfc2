"""udocker: pull, unpack and run container images without root."""

__version__ = "2.0.0.dev0"
