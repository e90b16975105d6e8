"""The concept store: concepts on disk, one folder per concept, written so a crash never leaves
a mix, read so that one damaged folder never stops the others.

Modules, one concern each: `layout` (the folders, the atomic save and crash recovery:
`ConceptStore`), `schema` (what each stored file must be before it is trusted: bounded reads,
the meta.json fields, the tensors), `registry` (which concept a typed name or id means, and
each concept's label-map class id), `forgotten` (which concepts were forgotten, when and by
which node), `shared` (a concept as one message to other nodes). Callers import from here.
"""

from .layout import NEGATIVES, SHOTS, ConceptStore, StoreNotWritable, StoreView
from .schema import MAX_LOOK_ALIKES, ConceptError

__all__ = ["MAX_LOOK_ALIKES", "NEGATIVES", "SHOTS", "ConceptError", "ConceptStore",
           "StoreNotWritable", "StoreView"]
