"""The gateway's routes, one router per group (FastAPI's "bigger applications" layout):
:mod:`.health`, :mod:`.openai`, :mod:`.jobs`, :mod:`.workflows` and :mod:`.files`."""
