"""udocker.record.Record: the immutable value class of descriptors, references, platforms and pull results."""

import copy
import pickle

import pytest

from udocker.oci.descriptor import Descriptor
from udocker.oci.platform import Platform
from udocker.record import Record


class Pair(Record):
    __slots__ = FIELDS = ("left", "right", "extra")
    DEFAULTS = (None,)


def test_arguments_positional_keyword_and_defaulted():
    assert Pair(1, 2) == Pair(left=1, right=2) == Pair(1, right=2, extra=None)
    assert Pair(1, 2, 3).extra == 3
    for bad in (lambda: Pair(1), lambda: Pair(1, 2, 3, 4), lambda: Pair(1, 2, left=1), lambda: Pair(1, 2, other=0)):
        with pytest.raises(TypeError):
            bad()


def test_fields_cannot_be_assigned_nor_deleted():
    pair = Pair(1, 2)
    with pytest.raises(AttributeError, match="immutable"):
        pair.left = 3
    with pytest.raises(AttributeError, match="immutable"):
        del pair.left
    with pytest.raises(AttributeError, match="immutable"):
        del Platform("linux", "amd64").os
    assert pair.left == 1


def test_equality_hash_copy_pickle_and_repr():
    pair = Pair(1, (2, 3))
    assert pair == Pair(1, (2, 3)) and hash(pair) == hash(Pair(1, (2, 3))) and pair != Pair(1, (2, 4))
    assert pair != (1, (2, 3), None)
    assert copy.copy(pair) == pickle.loads(pickle.dumps(pair)) == pair
    assert repr(pair) == "Pair(left=1, right=(2, 3), extra=None)"


def test_a_subclass_key_leaves_fields_out_of_equality():
    digest = "sha256:" + "0" * 64
    annotated = Descriptor("application/json", digest, 2, annotations={"a": "b"})
    assert annotated == Descriptor("application/json", digest, 2) and hash(annotated) == hash(
        Descriptor("application/json", digest, 2))
