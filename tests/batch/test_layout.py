"""The layout chooser (fastload.batch.layout) follows the spec table."""

from __future__ import annotations

import pytest

from fastload.batch.layout import choose_layout
from tests.support.collate_reference import SPEC_KERNEL_LAYOUT


@pytest.mark.parametrize("key", sorted(SPEC_KERNEL_LAYOUT, key=repr))
@pytest.mark.parametrize("stored", ["HWC", "CHW"])
def test_choose_layout_follows_the_spec_table(key, stored):
    memory_format, consumer = key
    plan = choose_layout(memory_format, stored, consumer)
    assert plan.kernel_layout == SPEC_KERNEL_LAYOUT[key][stored]
    assert plan.transpose == (plan.kernel_layout != "N" + stored)
    assert plan.torch_channels_last == (consumer == "torch" and memory_format == "channels_last")
    assert plan.view_layout == ("NCHW" if plan.torch_channels_last else plan.kernel_layout)
