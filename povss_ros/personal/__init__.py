"""The paper's personalization (prompt tuning, negative mask proposal, visual injection), and
which region of a frame is the concept's one object.

Modules: `concept` (one concept's tensors; `personal_scores`, SAN's inference with concepts),
`fusion` (several concepts decided at once), `identity` (at most one region per concept, the
one most like its shots), `shots` (one frozen forward per shot, masks on every grid),
`setloss` (SAN's set loss with the frozen part cached), `teach` (the training loop), `runtime`
(the optimizer's start-up import, freezing and thread helpers), `names` (concept names and
ids) + `store` (concepts on disk: `store.layout` the folders, atomic saves and crash recovery;
`store.schema` each stored file checked on its own, bounded reads and field types;
`store.registry` name or id lookup and class ids).
"""
