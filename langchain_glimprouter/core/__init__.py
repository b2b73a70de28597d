"""The routing core (``core``): the step loop and everything it decides with, as sans-I/O programs.

``engine`` (the step loop over two servers), ``decisions`` (who writes a step), ``generation``
(streams and the chain), ``ops`` (the I/O operations a program yields, retries and replica order),
``strategies`` and ``entropy`` (what decides a step's writer), ``prompts`` (each server's prompt,
rendered as programs), ``dialects`` (what each kind of server needs: rendering, request extras,
tokenization, error wording), ``servers`` (:class:`~.servers.ServerSpec`, a server as the core
sees it), ``tool_calls`` (tool calls in the answer's text) and ``wire`` (a streamed chunk as
routing reads it). Nothing here imports LangChain, an HTTP client or ``Backend``:
:mod:`langchain_glimprouter.http` performs the operations, :mod:`langchain_glimprouter.chat_models`
is the LangChain surface.
"""
