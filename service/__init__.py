"""`vidparse serve`: a FastAPI app over the engine (photos, jobs, live streams, a web page, health and metrics).

It sits above `vidparse.jobs` and the pipeline and uses them; nothing below imports it. docs/serve.md describes it.
"""
