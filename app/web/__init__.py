"""The worker's web server: one module per endpoint family, registered by ``routes``.

``params`` (request parameters, JSON errors), ``cluster`` (which worker owns a card),
``cards``, ``alerts``, ``observability`` (/stats, /metrics), ``health`` (/healthz,
/readyz), ``dashboard`` (static files); ``consumer`` (lag and the stall watch) and
``metrics`` (Prometheus collectors) read the runtime without Faust's app.
"""
