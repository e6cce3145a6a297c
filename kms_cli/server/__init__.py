"""`kms-cli serve`: the vault over HTTPS, speaking Vault's transit and KV v2 API (spec section 10).

Layout (each module owns one thing):
  api.py        the contract between the HTTP layer and the handlers: Request, ApiError, Route
  app.py        the ASGI application: routing, auth (tokens), rate limits, body limits, JSON errors
  worker.py     the vault worker thread: runs handlers in batches, one transaction and one commit
                (one fsync) per batch: group commit, each response released only after its commit
  transit.py    the /v1/transit/* handlers (encrypt, decrypt, rewrap, datakey, sign, verify, keys)
  kv.py         the /v1/secret/* handlers (KV version 2: data, metadata) and the mount discovery
  sys.py        /v1/sys/health and /v1/sys/metrics
  run.py        the serve command: unlock once, TLS 1.3 context (reloaded on SIGHUP), uvicorn,
                graceful shutdown on SIGTERM/SIGINT
Handlers are plain functions over the vault layer; the HTTP server never touches the store.
"""
