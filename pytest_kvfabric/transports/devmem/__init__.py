"""devmem TCP transport: TCP payload placed by the NIC in a dma-buf (udmabuf stands in for GPU memory).

Modules: `cmsg` (pure control-message and token codecs), `netlink` (netdev generic-netlink
family), `udmabuf` (dma-buf from a memfd), `nic` (header split / steering / RSS checks),
`probe` (each missing piece with its own reason), `transport` (DevmemTransport).
Nothing here is imported by the registry until the transport is asked for.
"""
