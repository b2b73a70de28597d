"""The routing core (``core``): the step loop and everything it decides with, as sans-I/O programs.

``engine`` (the step loop over two backends), ``ops`` (the I/O operations a program yields, retries
and replica order), ``strategies`` and ``entropy`` (what decides a step's writer), ``prompts``
(each backend's prompt, rendered as programs), ``tool_calls`` (tool calls in the answer's text) and
``wire`` (a streamed chunk as routing reads it). Nothing here imports LangChain or an HTTP client:
:mod:`langchain_glimprouter.http` performs the operations, :mod:`langchain_glimprouter.chat_models`
is the LangChain surface.
"""
