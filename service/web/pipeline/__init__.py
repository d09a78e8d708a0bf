"""The one turn pipeline every surface feeds: admit, claim, resolve, subscribe+enqueue, watch,
and the SSE framing every stream goes through.

The pipeline imports no surface; a surface hands it a parsed request and renders its answer.
"""
