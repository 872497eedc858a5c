"""firmlog.client: the firmlog protocol.

Formats, Merkle math, signed notes, checkpoints, cosignatures, tlog-proof
bundles, trust policies, firmware entries and device verification. Synchronous,
no I/O in the core, depends on ``cryptography`` only. The server and the
monitor import it; nothing is written twice.
"""
