"""The deploy gate decides from metrics, thresholds and the deployed model's recorded AP."""

import json

import pytest

from maskrcnn.errors import UserError
from maskrcnn.k8s import gate


def _metrics(box, mask, model_id="m1"):
    return {"bbox": {"AP": box, "AP50": 0.9}, "segm": {"AP": mask}, "model_id": model_id}


def test_module_is_pure():
    source = open(gate.__file__).read()
    assert "import kubernetes" not in source and "from kubernetes" not in source


def test_deploys_when_thresholds_met_and_nothing_deployed():
    decision = gate.decide(gate.scores_from_metrics(_metrics(0.40, 0.35)), min_box_ap=0.3, min_mask_ap=0.3)
    assert decision.deploy and "no model deployed yet" in decision.reason


@pytest.mark.parametrize("box, mask, needle", [
    (0.29, 0.35, "box AP 0.2900 < 0.3000 (threshold)"),
    (0.40, 0.10, "mask AP 0.1000 < 0.3000 (threshold)"),
])
def test_refuses_below_threshold(box, mask, needle):
    decision = gate.decide(gate.scores_from_metrics(_metrics(box, mask)), min_box_ap=0.3, min_mask_ap=0.3)
    assert not decision.deploy and needle in decision.reason


def test_refuses_a_model_worse_than_the_deployed_one_and_accepts_an_equal_one():
    deployed = gate.deployed_from_annotations(gate.ModelScore(0.41, 0.36, "old", "s3://b/old").annotations())
    assert deployed == gate.ModelScore(0.41, 0.36, "old", "s3://b/old")
    worse = gate.decide(gate.scores_from_metrics(_metrics(0.42, 0.35)), min_box_ap=0.3, min_mask_ap=0.3,
                        deployed=deployed)
    assert not worse.deploy and "mask AP 0.3500 < 0.3600 (deployed model)" in worse.reason
    equal = gate.decide(gate.scores_from_metrics(_metrics(0.41, 0.36)), min_box_ap=0.3, min_mask_ap=0.3,
                        deployed=deployed)
    assert equal.deploy
    assert json.dumps(equal.to_dict())  # the report is JSON


def test_unreadable_annotations_mean_nothing_recorded():
    assert gate.deployed_from_annotations({gate.ANNOTATION_BOX_AP: "n/a"}) is None
    assert gate.deployed_from_annotations(None) is None


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        gate.read_candidate(tmp_path / "missing.json")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        gate.read_candidate(tmp_path / "m.json")
    with pytest.raises(UserError, match="no usable bbox.AP"):
        gate.scores_from_metrics({"bbox": {}})
    with pytest.raises(UserError, match="not a fraction"):
        gate.scores_from_metrics(_metrics(41.0, 0.3))
    with pytest.raises(UserError, match="e.g. 0.30 for 30 AP"):
        gate.decide(gate.ModelScore(0.4, 0.4), min_box_ap=30, min_mask_ap=0.3)


def test_reads_metrics_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(_metrics(0.5, 0.45, "abc")))
    assert gate.read_candidate(path, "s3://b/m") == gate.ModelScore(0.5, 0.45, "abc", "s3://b/m")
