"""The operator's policy over the router settings a request may carry (:class:`ClientPolicy`).

By default a client may only tighten the operator's settings: lower ``max_tokens`` (OpenAI's
``max_completion_tokens``), ``max_reasoning_tokens`` and ``max_retries``; it may set OpenAI's own
sampling fields (``temperature``, ``top_p``, ``seed``), which cost the operator nothing. Every
other router setting (``threshold``, ``strategy``, ``entropy_estimator``, ``probe``,
``escalation_logprobs``, ``on_small_failure``, ...) is the operator's, and the backends'
timeouts are no per-request setting at all. The operator names what clients may set, with
caps, in ``glimprouter proxy --client-settings threshold,max_reasoning_tokens<=16384`` (or
``all``); a request beyond the policy gets a 400 that names its field and the flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_glimprouter.core.settings import PER_CALL, RouterSettings
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy.errors import ApiError

OPEN = ("temperature", "top_p", "seed")
"""OpenAI's sampling fields: any client may set them."""
LOWER_ONLY = ("max_tokens", "max_reasoning_tokens", "max_retries")
"""Budgets a client may lower (to the operator's value at most) unless the policy says more."""
MAX_RETRIES_CEILING = 10
"""The most retries a request may ask for even when the operator lets clients set
``max_retries`` with no cap: a client cannot make the proxy retry a failing backend forever."""
CLIENT_SETTINGS_ENV = "GLIMPROUTER_PROXY_CLIENT_SETTINGS"
"""The policy's flag value, for worker processes (see :mod:`.env`)."""
FLAG = "--client-settings"


@dataclass(frozen=True)
class ClientPolicy:
    """Which router settings a request may set (``allowed``: name -> cap, None for no cap) on
    top of :data:`OPEN` and lowering :data:`LOWER_ONLY`; ``everything``: any setting."""

    allowed: Mapping[str, float | None] = field(default_factory=dict)
    everything: bool = False

    @classmethod
    def parse(cls, spec: str | None) -> ClientPolicy:
        """The policy of a ``--client-settings`` value: ``name`` or ``name<=cap``, comma
        separated (``max_completion_tokens`` is ``max_tokens``), or ``all``; empty: the
        default."""
        allowed: dict[str, float | None] = {}
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            if item == "all":
                return cls(everything=True)
            name, sep, cap_text = (part.strip() for part in item.partition("<="))
            name = "max_tokens" if name == "max_completion_tokens" else name
            if name not in PER_CALL:
                raise InvalidArgumentError(
                    f"{FLAG}: {name!r} is no router setting a request may carry; name some of "
                    f"{sorted(PER_CALL)}, or 'all'.",
                    param="client_settings",
                )
            cap: float | None = None
            if sep:
                try:
                    cap = float(cap_text)
                except ValueError:
                    cap = math.nan
                if not math.isfinite(cap) or cap < 0:
                    raise InvalidArgumentError(
                        f"{FLAG}: the cap of {name} must be a number >= 0 (got {cap_text!r}), "
                        f"as in '{name}<=16384'.",
                        param="client_settings",
                    )
            allowed[name] = cap
        return cls(allowed)

    def spec(self) -> str:
        """The ``--client-settings`` value of this policy (:meth:`parse` reads it back)."""
        if self.everything:
            return "all"
        return ",".join(
            name if cap is None else f"{name}<={cap:g}" for name, cap in self.allowed.items()
        )

    def describe(self) -> str:
        """One line for the start-up banner."""
        given = self.spec() or "none"
        return f"client settings: {given} (and lower {', '.join(LOWER_ONLY)}; {', '.join(OPEN)})"

    def check(
        self, settings: Mapping[str, Any], operator: RouterSettings, aliases: Mapping[str, str]
    ) -> None:
        """Raise a 400 :class:`ApiError` for the first of a request's ``settings`` (by
        setting name; ``aliases``: the request's own names) the policy does not allow."""
        for name, value in settings.items():
            param = aliases.get(name, name)
            if name in self.allowed or self.everything:
                cap = self.allowed.get(name)
                if cap is None and name == "max_retries":
                    cap = max(MAX_RETRIES_CEILING, operator.max_retries)
                how = f"{FLAG} '{name}<=N'"
            elif name in OPEN:
                continue
            elif name in LOWER_ONLY:
                cap, how = getattr(operator, name), f"{FLAG} '{name}<=N'"
            else:
                raise ApiError(
                    400,
                    f"{param} is set by this proxy's operator; a request may not change it "
                    f"(the operator allows it with {FLAG} {name}).",
                    param=param,
                    code="setting_not_allowed",
                )
            if cap is not None:
                _check_cap(name, param, value, cap, operator, how)


def _check_cap(
    name: str, param: str, value: Any, cap: float, operator: RouterSettings, how: str
) -> None:
    try:
        number = operator.with_overrides({name: value})[name]
    except InvalidArgumentError:
        return  # not a valid value at all: the router's own check says why
    if isinstance(number, (int, float)) and not isinstance(number, bool) and number <= cap:
        return
    raise ApiError(
        400,
        f"{param}={value!r} is above this proxy's limit of {cap:g}: a request may lower it, not "
        f"raise it (the operator raises the limit with {how}).",
        param=param,
        code="setting_above_limit",
    )
