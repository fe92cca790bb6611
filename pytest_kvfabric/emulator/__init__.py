"""Pure emulator: KV layout, timing roofline, workloads, TransferPlan. No I/O here."""
