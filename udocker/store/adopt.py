"""udocker 1.x's images, adopted into the OCI store so that the rest of udocker 2 sees ordinary images.

A repository made by udocker 1.x keeps its images in repos/ and layers/ (store/v1images.py reads them). Each tag is
adopted by publishing its verified blobs in store/blobs (hard links: no space is used twice) and naming it in
index.json with the annotation V1_TAG (its directory under repos/). Nothing of 1.x's is written: udocker 1.3
goes on using the same files. `v1-images.json` records what was adopted, by the tag directory's signature
(names, sizes and mtimes of its entries), so that a command that resolves image names pays one walk of repos/
when nothing changed, and adopts again what 1.3 pulled (or finished pulling) since. A tag that 1.3 removed is
untagged here too (unless protected). rmi of an adopted image removes 1.3's tag as 1.3's rmi would.

Locks: `v1-adopt` (one adopter at a time), then `repo-gc` shared (like a pull: the blobs are referenced only
once tagged), then the blob and store-index locks.
"""

from __future__ import annotations

import os

from udocker import fastjson, fs, log
from udocker.errors import InvalidReference, UdockerError
from udocker.oci import digest as digests
from udocker.oci.descriptor import Descriptor
from udocker.oci.manifest import load_json, parse_manifest
from udocker.oci.mediatypes import OCI_CONFIG
from udocker.store import v1images as v1
from udocker.store.images import PROTECTED, V1_TAG


def _log():
    """The store's logger, made when something is said (logging is not loaded by an `images` that adopts
    nothing: the check of an unchanged repos/ loads no more than json's C scanner; nor are json, hashlib)."""
    return log.get("store")


def sync_v1_images(repo) -> int:
    """Adopt the 1.x images not yet adopted (or changed since), forget those 1.x removed; returns how many
    tags this call adopted. Cheap when nothing changed: a walk of repos/ and one small read. Nothing at all
    without repos/. Called only through repo.images.prepare() (the image store's names are read under it)."""
    layout = repo.layout
    if not os.path.isdir(layout.legacy_repos):
        return 0
    if _unchanged(_read_stamp(layout.v1_images), _scan(layout)):
        return 0
    with fs.locked(layout.lock("v1", "adopt"), timeout=repo.lock_timeout, what="the udocker 1 images"):
        stamp = _read_stamp(layout.v1_images)
        tags = {tag.key: tag for tag in v1.v1_image_tags(layout.legacy_repos)}
        seen = {key: v1.v1_tag_signature(tag) for key, tag in tags.items()}
        if _unchanged(stamp, seen):
            return 0  # another process adopted them while this one waited
        entries, adopted = dict(stamp.get("tags") or {}), 0
        with fs.locked(layout.lock("repo", "gc"), timeout=repo.lock_timeout, shared=True, what="the repository"):
            for key, tag in tags.items():
                if (entries.get(key) or {}).get("signature") != seen[key]:
                    entries[key] = _adopt(repo, tag, seen[key])
                    adopted += "digest" in entries[key]
            for key in [key for key in entries if key not in tags]:
                _forget(repo, key, entries.pop(key))
        import json  # written with indent=1, which fastjson does not do

        fs.atomic_write(layout.v1_images, json.dumps({"tags": entries}, indent=1).encode(), tmpdir=layout.tmp,
                        mode=0o600)
    return adopted


def _scan(layout) -> dict:
    return {tag.key: v1.v1_tag_signature(tag) for tag in v1.v1_image_tags(layout.legacy_repos)}


def _unchanged(stamp: dict, seen: dict) -> bool:
    entries = stamp.get("tags") or {}
    return set(entries) == set(seen) and all((entries[key] or {}).get("signature") == seen[key] for key in seen)


def _read_stamp(path: str) -> dict:
    try:
        data = fastjson.loads(fs.read_replaced(path))
    except (OSError, ValueError):
        return {}  # absent or unreadable: adopt again (idempotent)
    return data if isinstance(data, dict) else {}


def _adopt(repo, tag: v1.V1Tag, signature) -> dict:
    """Adopt one 1.x tag; its stamp entry. A tag that cannot be adopted gets one warning line (said again
    only when the tag changes) and an entry with the error, which find() reports for its name."""
    from udocker.reference import parse

    entry: dict = {"signature": signature}
    try:
        ref = str(parse(tag.text))
        entry["ref"] = ref
        image = v1.v1_image(tag)
        parse_manifest(load_json(image.manifest, f"manifest of {tag.text}"), f"manifest of {tag.text}")
        for digest, path in image.files.items():
            repo.blobs.adopt(path, digest)
        for digest, data in image.made.items():
            repo.blobs.put(data, Descriptor(OCI_CONFIG, digest, len(data)))
        manifest = Descriptor(image.media_type, digests.of(image.manifest),
                              len(image.manifest), None, {V1_TAG: tag.key})
        repo.blobs.put(image.manifest, manifest)
        load_json(repo.blobs.read(parse_manifest(load_json(image.manifest, ref), ref).config.digest), ref)
        repo.images.tag(ref, manifest)
    except InvalidReference as exc:
        entry["error"] = f"udocker 1 image {tag.text} has a name udocker 2 cannot use: {exc.message}"
    except UdockerError as exc:
        entry["error"] = exc.message if exc.message.startswith("udocker 1") else \
            f"udocker 1 image {tag.text} cannot be used: {exc.message}"
    else:
        entry["digest"] = manifest.digest
        _log().info("adopted udocker 1 image %s as %s", tag.text, ref)
        return entry
    _log().warning("warning: %s", entry["error"])
    return entry


def _forget(repo, key: str, entry: dict) -> None:
    """1.x's tag `key` is gone: its adopted name goes too, if it still names what was adopted and is not
    protected."""
    for image in repo.images.list():
        notes = image.descriptor.annotations
        if image.ref == entry.get("ref") and notes.get(V1_TAG) == key and notes.get(PROTECTED) != "true" \
                and image.descriptor.digest == entry.get("digest"):
            repo.images.untag(image.ref)


def v1_refusal(repo, text: str):
    """The reason a 1.x image named `text` could not be adopted (an UdockerError to raise), else None."""
    from udocker.reference import parse

    try:
        ref = str(parse(text))
    except InvalidReference:
        return None
    for entry in (_read_stamp(repo.layout.v1_images).get("tags") or {}).values():
        if entry.get("error") and entry.get("ref") == ref:
            return UdockerError(entry["error"], hint="pull the image again with udocker 2")
    return None


def remove_v1_origin(repo, image) -> None:
    """rmi of an adopted image: remove 1.3's tag as 1.3's rmi would (the tag directory and the layer files
    no other 1.x tag uses), if it is still the tag adopted."""
    key = image.descriptor.annotations.get(V1_TAG)
    tag = v1.v1_find_tag(repo.layout.legacy_repos, key)
    if tag is None:
        return
    entry = (_read_stamp(repo.layout.v1_images).get("tags") or {}).get(key) or {}
    if entry.get("digest") != image.descriptor.digest or entry.get("ref") != image.ref:
        return  # 1.3 pulled it again since, or this is another name (`udocker tag`) of the image
    if os.path.exists(os.path.join(tag.directory, "PROTECT")):
        _log().warning("warning: udocker 1's %s is protected (udocker 1.3's protect): kept for udocker 1.3", tag.text)
        return
    try:
        v1.v1_remove_image(repo.layout.legacy_repos, tag)
    except OSError as exc:
        _log().warning("warning: cannot remove udocker 1's %s: %s", tag.directory, exc.strerror)

