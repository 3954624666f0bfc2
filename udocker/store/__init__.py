"""The repository store. `Repository` lives in store.repository and is imported on first use, so that
the `run` path (which needs only store.containers) does not pay for the image store's imports."""


def __getattr__(name):
    if name == "Repository":
        from udocker.store.repository import Repository

        return Repository
    raise AttributeError(name)
