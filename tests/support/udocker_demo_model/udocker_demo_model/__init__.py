"""udocker's demo model for DEEPaaS's v2 API (the `deepaas.v2.model` entry point `udocker-demo`).

`predict` answers with facts of its input that a test can check without the model: the text reversed, its
length in characters and its sha256. DEEPaaS runs it in its worker processes, so the answer also proves that
the API, its process pool and the model's package all work inside the container.
"""

import hashlib

NAME = "udocker-demo"


def get_metadata():
    return {"id": "udocker-demo", "name": NAME, "version": "1.0.0", "author": "udocker",
            "license": "Apache 2.0", "description": "udocker's demo model: reverses and hashes a text"}


def warm():
    """Nothing to load."""


def get_predict_args():
    from webargs import fields  # deepaas's own dependency

    return {"text": fields.Str(required=True, metadata={"description": "The text to reverse and hash"})}


def predict(**kwargs):
    text = kwargs["text"]
    return {"model": NAME, "reversed": text[::-1], "length": len(text),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
