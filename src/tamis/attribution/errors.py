"""Errors raised by the attribution engine; each message names the problem."""


class AttributionError(ValueError):
    """Base class of attribution input errors."""


class UnsupportedModuleError(AttributionError):
    """A tracked module is not an ``nn.Linear`` or a supported ``nn.Conv2d``."""


class NonFiniteError(AttributionError):
    """A loss, measurement or gradient is NaN or infinite."""


class StoreError(AttributionError):
    """The on-disk store is missing, corrupted, truncated or inconsistent."""


class StoreMismatchError(StoreError):
    """The store was built for another model, layer set or projection."""


class DistributedError(RuntimeError):
    """A rank left the process group (died or stopped answering) during a collective."""
