"""`freight serve`: a local, faithful emulation of the providers' batch APIs (Anthropic, OpenAI) over real HTTP.

Layout: `app.py` wires the ASGI app; one module per dialect (`anthropic_api.py`, `openai_api.py`, `openai_files.py`);
`processor.py` runs batches through the state machine on a bounded worker pool; `store.py` keeps every batch, file
and result in SQLite; `faults.py` plants the failures tests need; `engines/` answers the requests.
"""
