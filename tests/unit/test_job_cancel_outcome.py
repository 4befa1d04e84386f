"""``Job.cancel()`` and ``AsyncJob.cancel()`` say in their types what they can return."""

from __future__ import annotations

import typing

import pytest

from comfyfn import AsyncJob, Job


@pytest.mark.parametrize("job_class", [AsyncJob, Job])
def test_cancel_returns_one_of_three_named_outcomes(job_class):
    returned = typing.get_type_hints(job_class.cancel)["return"]
    assert typing.get_origin(returned) is typing.Literal
    assert set(typing.get_args(returned)) == {"dequeued", "interrupted", "absent"}
