"""Teaching a personal concept: a request taken from validation to a fitted concept.

`requests` holds what a caller asks and gets back (plain data); `shot_masks` decides which
pixels of each teach frame are the object; `review` draws what a teach did with each frame;
`learn` runs one request through all of it and fits the concept with the paper's method
(`personal.teach`). Storing and swapping the concept in is the engine's
(`perception.PerceptionEngine`).
"""
