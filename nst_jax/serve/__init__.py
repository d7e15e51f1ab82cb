"""``nst-jax serve``: a job server with a live page, on the one-driver engine.

``store`` (the jobs in SQLite, WAL mode: nothing accepted is lost), ``jobs`` (a request's options
parsed and checked by the CLI's own parser and readers; the key of the compiled program a job
needs), ``worker`` (one thread owns the devices: it runs waiting jobs of one program and shape as
one batch, checkpoints at chunk boundaries and resumes after a crash), ``app`` (the HTTP API and
the page, Starlette). The command is ``cli.serve``.
"""
