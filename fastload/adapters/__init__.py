"""fastload inside other frameworks: torch's DataLoader (dataset, collate_fn) and DLPack interop.

Modules here import their framework at import time; nothing below this layer imports them.
"""
