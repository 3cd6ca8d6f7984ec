"""The supervisor of ``ser-stream up`` and ``serve``: one module per concept.

==================  =====================================================================
``pipeline``        :func:`~.pipeline.run_pipeline`: one session from start to end
``wiring``          the chain from the stage table, endpoints, each process's command
``processes``       the stage processes: started, heard, restarted with back-off, stopped
``collector``       the results back in order per stream, to the sinks and subscribers
``ledger``          per-stream accounting: :class:`~.ledger.Run`, :class:`~.ledger.Session`
``folder``          the runtime folder: the publish endpoint claim, the sweep of leftovers
``usage``           memory and CPU of each process, from ``/proc``
``ray_engine``      ``up --engine ray``: the processes as Ray actors, the supervisor the driver
``ray_host``        on a Ray node: the actor that owns a stage process, the endpoint registry
==================  =====================================================================

The settings a session runs with are :class:`ser_stream.settings.PipelineConfig`.
"""
