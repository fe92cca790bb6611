"""pytest-kvfabric transport `mooncake`: Mooncake's Transfer Engine as a third-party transport."""
