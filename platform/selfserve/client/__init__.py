"""The SDK: ``Client`` and its sub-clients."""

from selfserve.client._client import Client

__all__ = ["Client"]
