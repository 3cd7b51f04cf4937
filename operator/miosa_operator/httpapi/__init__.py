"""``miosa-operator api``: the seed's HTTP API and a deploy-history web page, in a process of their own.

Modules, outside in:

* ``server``: uvicorn, JSON logs, graceful shutdown.
* ``app``: FastAPI routes (thin), the OpenAPI document, the static web page (``static/``).
* ``middleware``: access log, body caps and timeouts, security headers.
* ``service``: the operations (resolve ids, authorise, list, promote, roll back, publish).
* ``auth``: TokenReview and SubjectAccessReview (cached); ``kube``: the async API server
  gateway with the API's own identity and the caller's, never mixed.
* ``paging``, ``decisions``, ``uploads``: pure decisions and the upload spool, unit-tested.
* ``schemas`` and ``errors``: the models of requests, answers and errors; versions are
  ``api.seed.SeedVersion``, shared with the kubectl plugin.
* ``settings``: ``MIOSA_API_*``.
"""
