"""``ser-stream bench``: the whole pipeline measured as it runs, real processes over ZeroMQ.

:mod:`.pipeline` runs the measurements, :mod:`.original` times the original system's approach
for comparison, :mod:`.report` writes the JSON and the Markdown report with its plots.
"""
