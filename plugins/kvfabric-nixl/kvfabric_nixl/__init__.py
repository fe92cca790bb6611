"""pytest-kvfabric transport `nixl`: NVIDIA NIXL (UCX backend by default) as a third-party transport."""
