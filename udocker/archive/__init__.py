"""Image archives in and out of the store: `load` (docker-archive, OCI image layout tarballs), `save`
(docker-archive) and `import` (a flat root filesystem tarball as a one-layer image)."""

from __future__ import annotations

from udocker.archive.importer import Imported, import_tarball
from udocker.archive.load import Loaded, load
from udocker.archive.save import save

__all__ = ["Imported", "Loaded", "import_tarball", "load", "save"]
