"""The committed synthetic-world model as the engine tests use it: its path, and an engine on
a shared segmenter with a fresh store (`conftest` provides the module's `synper` benchmark
and `small_segmenter`)."""

from __future__ import annotations

from pathlib import Path

from povss_lab.eval.identity import DEBOUNCE
from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter
from povss_ros.objects import ObjectConfig
from povss_ros.personal.teach import TeachConfig

SMALL = Path(__file__).resolve().parents[1] / "models" / "syn_small.safetensors"
# A presence filter that steadies (the node's default filters nothing): the identity eval's
# DEBOUNCE, present once seen in 2 of the last 3 frames, absent once missed in 3 of the last 5.
STEADIED = ObjectConfig(**dict(zip(("presence_enter", "presence_enter_window", "presence_leave",
                                    "presence_leave_window"), DEBOUNCE, strict=True)))


def engine_on(segmenter: Segmenter, root: Path, teach: TeachConfig,
              objects: ObjectConfig | None = None) -> PerceptionEngine:
    """An engine on `segmenter` (its concepts cleared first: the segmenter is shared by the
    module's tests) with its store at `root`, teaching with `teach`, finding objects with
    `objects` (the node's defaults when None)."""
    segmenter.set_concepts([])
    settings = EngineSettings(concept_store=str(root), teach=teach,
                              objects=objects or ObjectConfig())
    return PerceptionEngine(segmenter, ConceptStore(root), settings)


def held_out_view(segmenter: Segmenter, synper: object, spec: object) -> object:
    """The first sample of `spec`'s concept beyond its first five (the shots the tests teach
    from) in which the segmenter's taught concept claims pixels."""
    own = len(segmenter.vocabulary)
    return next(sample for sample in (synper.sample(s) for s in spec.positive_ids[5:])
                if (segmenter.decode(segmenter.encode(sample.image)).labels == own).any())
