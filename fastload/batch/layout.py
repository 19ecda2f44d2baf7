"""The batch layout: which memory order the collate kernel writes, and how the consumer
views it. Decided once per loader (or per :func:`~fastload.batch.collate.collate` call).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastload.checks import check_choice

MEMORY_FORMATS = ("auto", "channels_first", "channels_last", None)
CONSUMERS = ("numpy", "torch", "tensorflow", "jax")
LAYOUTS = ("HWC", "CHW")


@dataclass(frozen=True)
class LayoutPlan:
    """What the kernel writes and how the consumer should look at it.

    ``kernel_layout`` is the memory order of the batch ("NCHW" or "NHWC").
    ``torch_channels_last`` means the consumer wants torch's channels_last: an
    NCHW-shaped tensor with NHWC strides, i.e. NHWC memory viewed through
    ``permute(0, 3, 1, 2)`` -- no transposition in memory at all.
    """

    memory_format: str | None
    stored_layout: str
    kernel_layout: str
    consumer: str
    torch_channels_last: bool = False

    @property
    def transpose(self) -> bool:
        """True when the kernel must transpose (stored layout != kernel layout)."""
        return ("N" + self.stored_layout) != self.kernel_layout

    @property
    def view_layout(self) -> str:
        """The dimension order the consumer sees."""
        return "NCHW" if self.torch_channels_last else self.kernel_layout

    @property
    def view_permutation(self) -> tuple[int, ...] | None:
        """Axes permutation from the kernel's array to the consumer's view."""
        return (0, 3, 1, 2) if self.torch_channels_last else None


def choose_layout(
    memory_format: str | None = "auto", stored_layout: str = "HWC", consumer: str = "numpy"
) -> LayoutPlan:
    """Pick the layout the kernel writes for samples stored as ``stored_layout``.

    ``"auto"`` keeps the stored layout for numpy, gives NCHW to torch and NHWC
    to TensorFlow and JAX; ``None`` never converts. ``"channels_last"`` for
    torch writes NHWC and asks for a channels_last view of it.
    """
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    check_choice("layout", stored_layout, LAYOUTS)
    check_choice("consumer", consumer, CONSUMERS)
    resolved = memory_format
    if memory_format == "auto":
        resolved = {"numpy": None, "torch": "channels_first"}.get(consumer, "channels_last")
    if resolved is None:
        kernel = "N" + stored_layout
    else:
        kernel = "NCHW" if resolved == "channels_first" else "NHWC"
    return LayoutPlan(
        memory_format=resolved,
        stored_layout=stored_layout,
        kernel_layout=kernel,
        consumer=consumer,
        torch_channels_last=consumer == "torch" and resolved == "channels_last",
    )
