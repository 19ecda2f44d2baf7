# Included by the bridges: hand an fl_error to the one table in fastload.errors.
from fastload.errors import raise_native_error as _raise_native_error


cdef int _raise_fl_error(fl_error *err, object uri) except -1:
    _raise_native_error(
        err.code, uri,
        offset=err.offset, length=err.length, sys_errno=err.sys_errno,
        http_status=err.http_status, curl_code=err.curl_code,
        object_size=err.obj_size, attempts=err.attempts,
        message=err.msg.decode("utf-8", "replace"),
    )
    return -1
