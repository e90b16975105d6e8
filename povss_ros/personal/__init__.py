"""The paper's personalization (prompt tuning, negative mask proposal, visual injection).

Modules: `concept` (one concept's tensors; `personal_scores`, SAN's inference with concepts),
`shots` (one frozen forward per shot, masks on every grid), `setloss` (SAN's set loss with the
frozen part cached), `teach` (the training loop), `runtime` (its Adam, freezing and thread
helpers), `names` + `store` (concepts on disk) + `store_check` (each stored concept
checked on its own: bounded reads, field types, ids).
"""
