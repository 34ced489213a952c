"""`slmake serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over a deploy package.

package.py finds and reads a package, engine.py answers one request with the same runner bench
used (prompt template, greedy decoding, response schema), app.py is the HTTP surface (auth,
limits, queueing, OpenAI shapes), cli.py starts it.
"""
