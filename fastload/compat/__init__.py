"""Drop-in surfaces of other loaders on fastload (``fastload.compat.s3dlio``).

This package sits at the adapters' level: it imports the storage, plan and loop layers,
and nothing in fastload imports it.
"""
