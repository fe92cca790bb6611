"""RoCEv2 / InfiniBand transport through pyverbs.

Pure parts (sysfs parsing, QP attributes, work-request lists, probe decision) import no
pyverbs; only transport.py touches the verbs library, lazily, inside its methods.
"""
