"""KernelPyTorch Mesh: contract, bus, worker runtime, optimization pipeline, SDK and CLI."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import kpt` stays light for services and the gateway.
    if name in ("Client", "Job"):
        from kpt import client

        return getattr(client, name)
    raise AttributeError(name)
