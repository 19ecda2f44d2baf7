"""The Cython bridges, one per C kernel they wrap (buffer, file_reader, http_reader, collate)
and the status enums declared from the C headers (status)."""
