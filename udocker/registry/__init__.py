"""Everything that talks to registries over HTTP; the only package that imports requests."""
