"""``ser-stream serve``: the pipeline as a web service.

A gateway of the pipeline, not a second system: every WebSocket client is one more stream
through the same stage processes ``up`` runs (:mod:`ser_stream.web.gateway`), and
``POST /v1/predict`` calls the cores ``ser-stream predict`` calls. :mod:`ser_stream.web.app`
puts the API together from its routes (:mod:`~ser_stream.web.upload`,
:mod:`~ser_stream.web.stream`, :mod:`~ser_stream.web.pages`), which share one
:mod:`~ser_stream.web.service`; :mod:`ser_stream.web.guard` and :mod:`ser_stream.web.limits`
keep a client from exhausting the service, :mod:`ser_stream.web.metrics` holds the Prometheus
metrics and :mod:`ser_stream.web.serve` the command that runs it all.
"""
