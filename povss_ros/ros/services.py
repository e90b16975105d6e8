"""The node's services: teach_concept, forget_concept, list_concepts.

Message conversion and state checks only; the engine decides. Teaching needs an active node
(it reads captured frames and the model on its device); forgetting and listing need a
configured one. A teach called off by a transition or a shutdown answers its caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept

from ..perception import TeachRequest
from .conversions import UnsupportedEncoding, image_to_rgb, mask_from_image

if TYPE_CHECKING:
    from .perception_node import PerceptionNode

OUTCOME_FIELDS = (
    "success", "message", "concept_id", "class_id", "shots_used", "frames_rejected",
    "rejected_frames", "training_seconds", "fit_iou",
)


class ConceptServices:
    """Creates the three services on `node` and answers them."""

    def __init__(self, node: PerceptionNode) -> None:
        self.node = node
        group = node.services_group
        node.create_service(TeachConcept, "teach_concept", self.teach, callback_group=group)
        node.create_service(ForgetConcept, "forget_concept", self.forget, callback_group=group)
        node.create_service(ListConcepts, "list_concepts", self.list, callback_group=group)

    def _not_ready(self, needs_active: bool) -> str:
        node = self.node
        if node.closing:
            return "the node is shutting down"
        if node.engine is None:
            detail = f" (last configure failed: {node.configure_error})" if (
                node.configure_error) else ""
            return f"the node is {node.state_label()}: configure it first{detail}"
        if needs_active and node.state_label() != "active":
            return f"the node is {node.state_label()}: activate it to teach"
        return ""

    def teach(
        self, request: TeachConcept.Request, response: TeachConcept.Response
    ) -> TeachConcept.Response:
        try:
            return self._teach(request, response)
        except Exception as exc:  # noqa: BLE001 - the caller gets an answer, the node lives
            self.node.get_logger().error(f"teach_concept: unexpected {exc!r}")
            response.success, response.message = False, f"internal error: {exc!r}"
            return response

    def _teach(
        self, request: TeachConcept.Request, response: TeachConcept.Response
    ) -> TeachConcept.Response:
        why = self._not_ready(needs_active=True)
        if why:
            response.success, response.message = False, why
            return response
        try:
            teach_request = TeachRequest(
                request.name,
                request.base_class,
                [image_to_rgb(m) for m in request.images],
                [mask_from_image(m) for m in request.masks],
                int(request.num_frames),
                bool(request.overwrite),
                boxes=_groups(request.boxes, 4, "boxes"),
                points=_groups(request.points, 2, "points"),
            )
        except (UnsupportedEncoding, ValueError) as exc:
            response.success, response.message = False, f"bad request: {exc}"
            return response
        engine = self.node.engine
        outcome = engine.teach(
            teach_request,
            progress=lambda it, total, loss: self._log_progress(request.name, it, total, loss),
        )
        for name in OUTCOME_FIELDS:
            setattr(response, name, getattr(outcome, name))
        if outcome.review is not None:
            self.node.publish_review(outcome.review)
        log = self.node.get_logger()
        if outcome.success:
            self.node.refresh_concepts()
            log.info(outcome.message)
        else:
            log.warning(f"teach_concept failed: {outcome.message}")
        return response

    def _log_progress(self, name: str, it: int, total: int, loss: float) -> None:
        if it == 1 or it == total or it % 50 == 0:
            self.node.get_logger().info(
                f"teaching {name!r}: iteration {it}/{total}, loss {loss:.4f}"
            )

    def forget(
        self, request: ForgetConcept.Request, response: ForgetConcept.Response
    ) -> ForgetConcept.Response:
        why = self._not_ready(needs_active=False)
        if why:
            response.success, response.message = False, why
            return response
        response.success, response.message = self.node.engine.forget(request.name)
        if response.success and self.node.state_label() == "active":
            self.node.refresh_concepts()
        return response

    def list(
        self, request: ListConcepts.Request, response: ListConcepts.Response
    ) -> ListConcepts.Response:
        if self._not_ready(needs_active=False):
            return response  # empty: nothing is loaded
        entries = self.node.engine.concept_entries()
        response.concept_ids = [e.concept_id for e in entries]
        response.names = [e.name for e in entries]
        response.base_classes = [e.base_class for e in entries]
        response.class_ids = [e.class_id for e in entries]
        response.shot_counts = [e.shots for e in entries]
        return response


def _groups(values: object, size: int, what: str) -> list[tuple[float, ...]]:
    """A flat float array -> tuples of `size` (4 per box, 2 per point)."""
    flat = [float(v) for v in values]
    if len(flat) % size:
        raise ValueError(f"{what} holds {len(flat)} numbers: give {size} per entry")
    return [tuple(flat[i : i + size]) for i in range(0, len(flat), size)]
