"""The soft-RoCE lab: a VM on a distribution kernel (virtme-ng over QEMU) in which the rdma
transport meets a real verbs provider (rdma_rxe) and devmem a real /dev/udmabuf."""
