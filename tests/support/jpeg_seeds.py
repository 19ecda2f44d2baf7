"""Small JPEGs Pillow cannot write (it writes no arithmetic coding, and no 4:4:0 or 4:1:1
subsampling), made once with libjpeg-turbo 2.1.5's compressor (``arith_code``,
``jpeg_simple_progression``, the luma component's sampling factors) from the pixels of
``images.picture(21, 29, 7)``. Pillow (libjpeg-turbo 3) decodes them all: tests compare the
native decoder with that."""

from __future__ import annotations

import base64

# 29 x 21, 4:2:0, arithmetic-coded (SOF9), q60
ARITH_420 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+"
    "MzZGNywtQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09P"
    "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//yQARCAAVAB0DASIAAhEBAxEB/8wACgAQEAUBEBEF"
    "/9oADAMBAAIRAxEAPwDSW5DuL77AhqMg1pgMW/GNV/ucXZgs68sKrwUnrsvPzV0Dzz56NR6JRX1ItskLlu0b"
    "3rYcNwbngn84gN5jMLpwyn5YcH/k9iPtEToETRSE1bCM04xvzcWBW2WKY3HRLB3n+rLDuP/Z"
)

# 29 x 21, 4:2:0, progressive arithmetic-coded (SOF10), q60
ARITH_PROGRESSIVE = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+"
    "MzZGNywtQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09P"
    "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//ygARCAAVAB0DASIAAhEBAxEB/8wABgAQARD/2gAM"
    "AwEAAhADEAAAAdG6bRCaQ7e8kvhMyEnI6m9yAYD/zAAEEAX/2gAIAQEAAQUCfoR4cqn/zAAEEQX/2gAIAQMB"
    "AT8BS4rRUEMdGdT/zAAEEQX/2gAIAQIBAT8BF60fR1gCrpVVIv/MAAQQBf/aAAgBAQAGPwLA/8wABBAF/9oA"
    "CAEBAAE/IUgXCeVNH4eP6xD/2gAMAwEAAgADAAAAEPv0IYD/zAAEEQX/2gAIAQMBAT8QBwsQ/JLygP/MAAQR"
    "Bf/aAAgBAgEBPxCQk1v/AJL1/8wABBAF/9oACAEBAAE/EKo3nF2q+tB6Xl5fveIRlXT2HirpHRr7DdICfSqK"
    "eVaKrP/Z"
)

# 29 x 21, 4:4:0 (luma sampled 1 x 2), q60
SUBSAMPLED_440 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+"
    "MzZGNywtQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09P"
    "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//wAARCAAVAB0DARIAAhEBAxEB/8QAHwAAAQUBAQEB"
    "AQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKB"
    "kaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1"
    "dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl"
    "5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcF"
    "BAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0"
    "tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDpTMo5Brm/"
    "7ROODzXGsVE+geFZ0RmHPODXNtqB6huv4V1Upc+xhODidEZgTgEVzR1Jhg5/WvRp4SUkcssQonSCZfWuaGot"
    "jOSc1t/Z8mZPGLoZzsRzRXxyR9W9rkbMRz7UV62BZ5WKGsxDDnrRX1mF2R87iN2IXOSMmivQilY5LI//2Q=="
)

# 29 x 21, 4:1:1 (luma sampled 4 x 1), q60
SUBSAMPLED_411 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+"
    "MzZGNywtQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09P"
    "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//wAARCAAVAB0DAUEAAhEBAxEB/8QAHwAAAQUBAQEB"
    "AQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKB"
    "kaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1"
    "dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl"
    "5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcF"
    "BAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0"
    "tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDpTMo5Bppm"
    "HPODTTMCcAikEy+tVTXNses3y7mB/aJxweaa2oHqG6/hTDqTDBz+tINRbGck5rfKI+2TIzF+zZnOxHNRsxHP"
    "tTWYhhz1pC5yRk1rw6vdZOdr3kf/2Q=="
)

ALL = {
    "arith_420": ARITH_420,
    "arith_progressive": ARITH_PROGRESSIVE,
    "subsampled_440": SUBSAMPLED_440,
    "subsampled_411": SUBSAMPLED_411,
}


# -- lossless JPEG (SOF3), written here: neither Pillow nor libjpeg-turbo 2 writes one ------

_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)  # the standard DC luminance table


def lossless(pixels) -> bytes:
    """An 8-bit lossless JPEG (SOF3, Huffman, predictor 1: the left neighbour, the one above
    at a row's start) of ``pixels``: (h, w) grey or (h, w, 3) components stored as given."""
    import numpy as np

    px = np.asarray(pixels, dtype=np.int64)
    px = px[:, :, None] if px.ndim == 2 else px
    h, w, c = px.shape
    codes, code, k = {}, 0, 0
    for length, count in enumerate(_DC_BITS, start=1):
        for _ in range(count):
            codes[k] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    pred = np.empty_like(px)
    pred[:, 1:] = px[:, :-1]
    pred[1:, 0] = px[:-1, 0]
    pred[0, 0] = 128
    bits = []
    for d in (px - pred).reshape(-1).tolist():
        s = abs(d).bit_length()
        value, n = codes[s]
        bits.append(format(value, f"0{n}b"))
        if s:
            bits.append(format(d if d > 0 else d + (1 << s) - 1, f"0{s}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    entropy = bytearray()
    for i in range(0, len(stream), 8):
        entropy.append(int(stream[i : i + 8], 2))
        if entropy[-1] == 0xFF:
            entropy.append(0)  # stuffed

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof = bytes([8]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([c])
    sof += b"".join(bytes([i + 1, 0x11, 0]) for i in range(c))
    sos = bytes([c]) + b"".join(bytes([i + 1, 0]) for i in range(c)) + bytes([1, 0, 0])
    return (
        b"\xff\xd8"
        + segment(0xC3, sof)
        + segment(0xC4, bytes([0]) + bytes(_DC_BITS) + bytes(range(12)))
        + segment(0xDA, sos)
        + bytes(entropy)
        + b"\xff\xd9"
    )
