"""The detection engine, pure and synchronous: no Faust, no settings, no I/O.

Payments in (``validation``: raw bytes to a :class:`~app.detection.models.Payment` or a
reason; ``pan``: card numbers recognised and masked), rules (``rules``: parsing and
validation; ``rulebook``: the fold of the rules topic), and the engine (``engine``: each
key's pool of qualifying events, alerts out; ``keys``: partitions and group keys).
"""
