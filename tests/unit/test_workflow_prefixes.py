"""Per-job output prefixes (:meth:`Workflow.per_job_prefixes`), which the batch and the
gateway both give each job so ComfyUI's SaveImage never lists a huge folder."""

from __future__ import annotations

from comfyfn.workflow import zimage_turbo


def test_each_output_node_gets_the_job_s_own_folder():
    wf = zimage_turbo()
    assert wf.per_job_prefixes("ab/job_1", given={}) == {
        "9.filename_prefix": "z-image-turbo/ab/job_1"
    }
    bound = wf.bind(**wf.per_job_prefixes("ab/job_1", given={}))
    assert bound.graph["9"]["inputs"]["filename_prefix"] == "z-image-turbo/ab/job_1"


def test_a_prefix_the_job_sets_itself_is_left_alone():
    wf = zimage_turbo()
    assert wf.per_job_prefixes("ab/job_1", given={"filename_prefix": "mine"}) == {}
    assert wf.per_job_prefixes("ab/job_1", given={"9.filename_prefix": "mine"}) == {}
