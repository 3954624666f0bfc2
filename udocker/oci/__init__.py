"""The OCI image-spec model: media types, descriptors, manifests, indexes, platforms. No I/O."""
