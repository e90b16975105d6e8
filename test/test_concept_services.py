"""The concept services' answers when something after the change fails, or a handler meets an
error nobody foresaw: a change made stands in its answer (a caller told otherwise would retry
a forget of a concept already gone), and no error reaches the executor, which would stop the
node. The handlers are driven directly through a host of the test's own (`ConceptHost`): a
real engine on a tiny SAN, and publishing that fails."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_san import proposal_following_tiny_san
from rclpy.logging import get_logger

from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept
from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter
from povss_ros.personal.teach import TeachConfig
from povss_ros.ros.conversions import array_to_image
from povss_ros.ros.services import ConceptServices

pytestmark = pytest.mark.ros


class FailingHost:
    """A node whose outputs fail to publish; with `broken`, whose state cannot be read."""

    def __init__(self, engine: PerceptionEngine, broken: bool = False) -> None:
        self.engine, self.broken, self.publish_calls = engine, broken, 0

    def service_refusal(self, needs_active: bool) -> str:
        if self.broken:
            raise RuntimeError("the node's state could not be read")
        return ""

    def concepts_changed(self) -> None:
        self.publish_calls += 1
        raise RuntimeError("publisher gone")

    def publish_review(self, picture: np.ndarray) -> None:
        self.publish_calls += 1
        raise RuntimeError("publisher gone")

    def get_logger(self):  # noqa: ANN201 - rclpy's RcutilsLogger
        return get_logger("test_concept_services")


@pytest.fixture()
def engine(tmp_path) -> PerceptionEngine:
    seg = Segmenter(proposal_following_tiny_san(), ["person", "bottle", "chair"], "cpu",
                    random_weights=True)
    settings = EngineSettings(concept_store=str(tmp_path),
                              teach=TeachConfig(iterations=3, num_points=256))
    return PerceptionEngine(seg, ConceptStore(tmp_path), settings)


def _teach_request() -> TeachConcept.Request:
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[20:60, 30:90] = 255
    return TeachConcept.Request(name="mine", base_class="bottle",
                                images=[array_to_image(image, "rgb8")],
                                masks=[array_to_image(mask, "mono8")])


def test_a_teach_and_a_forget_answer_success_though_publishing_them_fails(engine):
    host = FailingHost(engine)
    services = ConceptServices(host)
    taught = services.teach(_teach_request(), TeachConcept.Response())
    assert taught.success, taught.message
    assert [e.name for e in engine.concept_entries()] == ["mine"]
    forgot = services.forget(ForgetConcept.Request(name="mine"), ForgetConcept.Response())
    assert forgot.success, forgot.message
    assert engine.concept_entries() == []
    assert host.publish_calls == 3  # the review, the concepts after the teach and the forget


def test_an_error_nobody_foresaw_is_answered_with_a_fresh_response(engine):
    services = ConceptServices(FailingHost(engine, broken=True))
    half_filled = ListConcepts.Response(names=["stale"], concept_ids=["stale"])
    listed = services.list(ListConcepts.Request(), half_filled)
    assert listed is not half_filled and list(listed.names) == [] and list(listed.concept_ids) == []
    forgot = services.forget(ForgetConcept.Request(name="mine"),
                             ForgetConcept.Response(success=True, message="stale"))
    assert not forgot.success
    assert forgot.message.startswith("internal error: RuntimeError(\"the node's state")
    taught = services.teach(_teach_request(), TeachConcept.Response())
    assert not taught.success and "internal error" in taught.message
    assert engine.concept_entries() == []  # nothing was taught
