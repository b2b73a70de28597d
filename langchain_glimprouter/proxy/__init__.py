"""An OpenAI-compatible chat completions server over a :class:`~langchain_glimprouter.router.
Router` (needs the ``proxy`` extra: starlette, uvicorn, prometheus-client). It loads neither
LangChain nor LlamaIndex.

``create_app(router, *, served_name="glimprouter", api_key=None, max_body_bytes=4 MiB,
reasoning_effort_budgets=None, allowed_origins=())`` is a Starlette app over a Router (or what
wraps one: a ``GlimpRouterChatModel`` is served through its ``router``); ``app_from_env()``
builds one in each worker of ``uvicorn --factory --workers N`` from the variables that
``router_env(router, served_name, api_key=...)`` writes (:mod:`.env`). Endpoints:

``POST /v1/chat/completions``
    OpenAI's request body, plain or streamed (``stream``, ``stream_options.include_usage``),
    checked by pydantic models of OpenAI's fields (:mod:`.chat_request`, as vLLM's server
    checks it) and handed to :meth:`Router.prepare` as OpenAI-style dicts; the response is
    written from the Router's events (:mod:`.openai_json`), so tool-call parsing, forced calls
    and records are the Router's.

    * ``messages`` in the shapes OpenAI and vLLM accept: an assistant message with
      ``tool_calls`` and absent or null ``content``, ``content`` as a list of text parts,
      ``name`` on any message, tool messages.
    * The chain is ``message.reasoning_content`` (``delta.reasoning_content`` in a stream), the
      same text also under ``reasoning``; the answer is ``content``. ``usage`` counts both
      servers' tokens, with ``completion_tokens_details.reasoning_tokens``.
    * ``tools`` / ``tool_choice`` and ``response_format`` (``json_schema``, ``json_object``)
      constrain the answer (a ``text`` response_format is none); calls come back parsed in
      ``message.tool_calls`` (``delta.tool_calls``: one whole call per delta, with its index),
      each with a name and an id, with ``finish_reason: "tool_calls"``. Call text that did
      not parse is content, never a call (the answer's own finish reason; under a forcing
      ``tool_choice`` the record's ``answer_error`` says why there is no call).
    * ``stop``, ``max_tokens`` / ``max_completion_tokens`` (the answer's budget; the chain's is
      ``max_reasoning_tokens``), ``temperature``, ``top_p``, ``seed``, and every other router
      setting but ``top_logprobs`` (the glimpse k, the operator's) as an extra field
      (``threshold``, ``strategy``, ``max_reasoning_tokens``, ...), validated as the
      constructor validates. Sampling values are checked with vLLM's ranges first.
    * vLLM's ``frequency_penalty``, ``presence_penalty``, ``repetition_penalty``, ``top_k``,
      ``min_p`` and ``chat_template_kwargs`` go to both servers; ``reasoning_effort`` is a
      reasoning budget from the operator's table (``reasoning_effort_budgets``).
    * ``model`` is ``served_name`` or the large backend's model name. ``user``, ``metadata``,
      ``store``, ``parallel_tool_calls``, ``n=1`` and ``logprobs=false`` are accepted (``n >
      1``, ``logprobs=true`` and ``top_logprobs``, OpenAI's answer logprobs, are 400s); any
      other field is refused with a 400 that names it. A field whose value is null is one not
      given, as in OpenAI's API. Bodies are strict JSON (:mod:`.strict_json`): NaN, Infinity,
      lone surrogates and nesting beyond 64 are 400s, and what the proxy writes has no
      non-finite number (``threshold=inf`` is ``"inf"``).

    The extension field ``glimprouter``: on a ``chat.completion``, the routing record (a
    ``RoutingRecord`` dict: ``n_steps``, ``n_large_steps``, ``intervention_rate``,
    ``steps``, ...; see docs/reference.md). In a stream, each step as it finishes is a chunk with
    ``"choices": []`` and ``"glimprouter": {"step": <StepRecord dict>}``; the last chunk before
    ``[DONE]`` (the finish chunk, or the usage chunk when ``include_usage``) carries
    ``"glimprouter": <the record>``. A plain response also has the headers
    ``x-glimprouter-steps``, ``x-glimprouter-large-steps``,
    ``x-glimprouter-intervention-rate``, ``x-glimprouter-large-share`` and
    ``x-glimprouter-saved-tokens`` (what routing saved on the large model; a stream's are in its
    last chunk's record).

``POST /v1/responses``
    OpenAI's Responses API, stateless, over the same Router and code path
    (:mod:`.responses`, :mod:`.responses_json`): ``input`` (a string, or message,
    ``function_call`` and ``function_call_output`` items; passed-back ``reasoning`` items are
    dropped), ``instructions``, flat function ``tools``, ``tool_choice``, ``text.format``,
    ``max_output_tokens`` map onto the chat request; ``previous_response_id``,
    ``conversation``, ``prompt``, ``store: true``, ``background: true`` and built-in tools are
    a 400 that says what to send instead. The output is one ``reasoning`` item (the chain as
    ``reasoning_text``), then a ``message`` and ``function_call`` items; a stream sends the
    Responses events, each with its ``sequence_number``, each finished step as a
    ``glimprouter.step`` event; the record is the ``glimprouter`` field.
``GET /v1/models``, ``GET /v1/models/{id}``
    The served name, and the large model's name as an alias (``owned_by: "glimprouter"``).
``GET /health``
    ``{"status": "ok", "small": "ok", "large": "ok"}``, or 503 with ``"unavailable"`` and the
    tier that is down as ``"unreachable"``, ``"timeout"`` or ``"error"`` (each backend's
    ``GET /v1/models``). Open without the key.
``GET /metrics``
    Prometheus text format (:mod:`.metrics`).

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``, ``param`` naming the
request's field at fault when there is one: 400 for what the request can fix (bad JSON or
fields, invalid settings, ``context_length_exceeded``), 401 (a
missing or wrong key), 404 (``model_not_found``, unknown routes), 413 (a body over
``max_body_bytes``), 502 (a backend's bad or broken answer), 503 (a backend unreachable), 504
(a backend timed out). A stream that fails after it started ends with one
``data: {"error": {...}}`` event and no ``[DONE]``. A client that disconnects aborts both
servers' requests at once (:mod:`.streaming`). Backend keys never appear in answers or metrics.
Every response has an ``x-request-id`` (the client's own if it sent one), each request one
access-log line, and CORS serves the ``allowed_origins`` only (:mod:`.access_log`).
"""

from langchain_glimprouter.proxy.app import create_app
from langchain_glimprouter.proxy.env import app_from_env, router_env

__all__ = ["app_from_env", "create_app", "router_env"]
