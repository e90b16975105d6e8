"""The concept services' handlers: teach_concept, forget_concept, list_concepts.

Message conversion only: a request becomes a `TeachRequest` (or a name), the engine decides,
its answer becomes the response. The handlers see their node through `ConceptHost`, the few
things they need of it (whether it can serve now, its engine, its concept outputs), so they
can be read, and tested, without the node. A teach called off by a transition or a shutdown
answers its caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept

from ..perception import PerceptionEngine
from ..teaching.requests import TeachRequest, coordinate_groups
from .conversions import UnsupportedEncoding, image_to_rgb, mask_from_image

OUTCOME_FIELDS = (
    "success", "message", "concept_id", "class_id", "shots_used", "negatives_used",
    "frames_rejected", "rejected_frames", "training_seconds", "fit_iou",
)


def after_the_fact(logger: Any, what: str, step: Callable[..., object], *args: object) -> None:
    """A step after a change is made (publishing it): its failure is logged on `logger` and the
    change stands (the store changed; a caller told otherwise would retry, and an error here
    must not reach the executor, which would stop the node)."""
    try:
        step(*args)
    except Exception as exc:  # noqa: BLE001 - only the publishing failed
        logger.error(f"{what}: {exc!r}")


class ConceptHost(Protocol):
    """What the handlers need of the node that serves them."""

    @property
    def engine(self) -> PerceptionEngine | None: ...

    def service_refusal(self, needs_active: bool) -> str:
        """Why the node cannot serve a request now ("" if it can); teaching needs an active
        node (`needs_active`), forgetting and listing a configured one."""

    def concepts_changed(self) -> None:
        """Publish the concept outputs again (after a teach or a forget)."""

    def publish_review(self, picture: np.ndarray) -> None:
        """Latch a teach's review picture."""

    def get_logger(self):  # noqa: ANN201 - rclpy's RcutilsLogger
        """The node's logger."""


class ConceptServices:
    """The three handlers, answering for `host`; the node registers them."""

    def __init__(self, host: ConceptHost) -> None:
        self.host = host

    def teach(
        self, request: TeachConcept.Request, response: TeachConcept.Response
    ) -> TeachConcept.Response:
        return self._answered("teach_concept", self._teach, request, response)

    def forget(
        self, request: ForgetConcept.Request, response: ForgetConcept.Response
    ) -> ForgetConcept.Response:
        return self._answered("forget_concept", self._forget, request, response)

    def list(
        self, request: ListConcepts.Request, response: ListConcepts.Response
    ) -> ListConcepts.Response:
        return self._answered("list_concepts", self._list, request, response)

    def _answered(self, service: str, handler: Callable[[Any, Any], Any], request: Any,
                  response: Any) -> Any:
        """`handler`'s response; an exception nobody foresaw is logged and answered (success
        false, where the response has one) instead of reaching the executor, which would
        stop the node."""
        try:
            return handler(request, response)
        except Exception as exc:  # noqa: BLE001 - the caller gets an answer, the node lives
            self.host.get_logger().error(f"{service}: unexpected {exc!r}")
            answer = type(response)()  # nothing half filled in
            if hasattr(answer, "success"):
                answer.success, answer.message = False, f"internal error: {exc!r}"
            return answer

    def _teach(
        self, request: TeachConcept.Request, response: TeachConcept.Response
    ) -> TeachConcept.Response:
        why = self.host.service_refusal(needs_active=True)
        engine = self.host.engine
        if why or engine is None:
            response.success, response.message = False, why or "the node has no model"
            return response
        try:
            teach_request = TeachRequest(
                name=request.name,
                base_class=request.base_class,
                images=[image_to_rgb(m) for m in request.images],
                masks=[mask_from_image(m) for m in request.masks],
                num_frames=int(request.num_frames),
                overwrite=bool(request.overwrite),
                boxes=coordinate_groups(request.boxes, 4, "boxes"),
                points=coordinate_groups(request.points, 2, "points"),
                unique=False if request.category else None,  # None: as stored, or one
                negative_masks=[mask_from_image(m) for m in request.negative_masks],
                negative_boxes=coordinate_groups(request.negative_boxes, 4, "negative_boxes"),
                negative_points=coordinate_groups(request.negative_points, 2,
                                                  "negative_points"),
                correct=bool(request.correct),
                camera=request.camera,
            )
        except (UnsupportedEncoding, ValueError) as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        outcome = engine.teach(
            teach_request,
            progress=lambda it, total, loss: self._log_progress(request.name, it, total, loss),
        )
        for name in OUTCOME_FIELDS:
            setattr(response, name, getattr(outcome, name))
        if outcome.review is not None:
            after_the_fact(self.host.get_logger(), "publishing the teach review",
                           self.host.publish_review, outcome.review)
        log = self.host.get_logger()
        if outcome.success:
            after_the_fact(log, "publishing the concepts", self.host.concepts_changed)
            log.info(outcome.message)
        else:
            log.warning(f"teach_concept failed: {outcome.message}")
        return response

    def _log_progress(self, name: str, it: int, total: int, loss: float) -> None:
        if it == 1 or it == total or it % 50 == 0:
            self.host.get_logger().info(
                f"teaching {name!r}: iteration {it}/{total}, loss {loss:.4f}"
            )

    def _forget(
        self, request: ForgetConcept.Request, response: ForgetConcept.Response
    ) -> ForgetConcept.Response:
        why = self.host.service_refusal(needs_active=False)
        engine = self.host.engine
        if why or engine is None:
            response.success, response.message = False, why or "the node has no model"
            return response
        response.success, response.message = engine.forget(request.name)
        if response.success:
            after_the_fact(self.host.get_logger(), "publishing the concepts",
                           self.host.concepts_changed)
        return response

    def _list(
        self, request: ListConcepts.Request, response: ListConcepts.Response
    ) -> ListConcepts.Response:
        engine = self.host.engine
        if self.host.service_refusal(needs_active=False) or engine is None:
            return response  # empty: nothing is loaded
        entries = engine.concept_entries()
        response.concept_ids = [e.concept_id for e in entries]
        response.names = [e.name for e in entries]
        response.base_classes = [e.base_class for e in entries]
        response.class_ids = [e.class_id for e in entries]
        response.shot_counts = [e.shots for e in entries]
        return response
