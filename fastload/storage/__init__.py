"""Storage: URIs, the range engine, buffer pools, and the file, http(s) and s3 backends."""
