"""Data: object storage, connectors, datasets, transforms, contracts and the catalog."""
