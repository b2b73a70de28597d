"""The HTTP layer: the client of one server (:mod:`.client`, over the openai SDK) and the drivers
that run a routing program with such clients (:mod:`.drivers`)."""
