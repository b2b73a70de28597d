"""The vocabulary check of ``glimprouter serve --speculative``: a draft model and its target must
share their vocabulary, or vLLM refuses the pair (or drafts are mostly rejected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_glimprouter.cli.servers import ServeError, is_local_model


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServeError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ServeError(f"{path} is not a JSON object")
    return data


def _config_vocab_size(folder: Path) -> int | None:
    config = _read_json(folder / "config.json")
    for section in (config, config.get("text_config") or {}):
        if isinstance(section, dict) and isinstance(section.get("vocab_size"), int):
            return int(section["vocab_size"])
    return None


def _tokenizer_vocab(folder: Path) -> tuple[dict[str, int], dict[str, int]] | None:
    """(the tokenizer model's vocabulary, the special added tokens), both token -> id."""
    path = folder / "tokenizer.json"
    if not path.exists():
        return None
    data = _read_json(path)
    raw = (data.get("model") or {}).get("vocab")
    if isinstance(raw, dict):
        vocab = {str(k): int(v) for k, v in raw.items()}
    elif isinstance(raw, list):  # Unigram: [[piece, score], ...], the id is the position
        vocab = {str(entry[0]): i for i, entry in enumerate(raw)}
    else:
        vocab = {}
    special = {
        str(t["content"]): int(t["id"])
        for t in data.get("added_tokens") or []
        if isinstance(t, dict) and t.get("special")
    }
    return vocab, special


def _few(tokens: set[str], n: int = 5) -> str:
    listed = ", ".join(repr(t) for t in sorted(tokens)[:n])
    return listed + (f" and {len(tokens) - n} more" if len(tokens) > n else "")


def check_same_vocabulary(small: str, large: str, *, force: bool = False) -> list[str]:
    """Refuse a draft/target pair for speculative decoding whose vocabularies differ.

    Both local folders: ``vocab_size`` in config.json must be equal (vLLM refuses the pair
    otherwise, after loading both models), and where both have a tokenizer.json, the
    tokenizer's vocabulary and its special added tokens (token and id) must be equal (drafts in
    another tokenizer's ids are mostly rejected, so decoding gets slower, not faster). A model
    that is not a local folder cannot be checked here: refused unless ``force``. ``force`` also
    lets tokenizer differences pass, never a ``vocab_size`` mismatch. Returns warnings for what
    was not checked.
    """
    if Path(small).expanduser().resolve() == Path(large).expanduser().resolve():
        return []
    remote = [m for m in (small, large) if not is_local_model(m)]
    if remote:
        what = "is not a local folder" if len(remote) == 1 else "are not local folders"
        message = (
            f"--speculative: cannot check that {small} (draft) and {large} share a vocabulary: "
            f"{' and '.join(remote)} {what}. Compare `vocab_size` in both config.json files and "
            "both tokenizer.json files (e.g. `hf download MODEL config.json tokenizer.json`), or "
            "pass local folders; then pass --force-speculative to start anyway."
        )
        if not force:
            raise ServeError(message)
        return [message.replace("cannot check", "did not check")]
    small_dir, large_dir = Path(small).expanduser(), Path(large).expanduser()
    sizes = _config_vocab_size(small_dir), _config_vocab_size(large_dir)
    if None in sizes:
        raise ServeError(
            f"--speculative: no vocab_size in the config.json of "
            f"{small if sizes[0] is None else large}; cannot check the pair {small} / {large}"
        )
    if sizes[0] != sizes[1]:
        raise ServeError(
            f"--speculative: the draft {small} (vocab_size {sizes[0]}) and the large model "
            f"{large} (vocab_size {sizes[1]}) have different vocabularies; speculative decoding "
            "needs a draft model with the large model's tokenizer."
        )
    small_tok, large_tok = _tokenizer_vocab(small_dir), _tokenizer_vocab(large_dir)
    problem: str | None = None
    if small_tok is None or large_tok is None:
        problem = "cannot compare the tokenizers: tokenizer.json is missing in " + " and ".join(
            m for m, t in ((small, small_tok), (large, large_tok)) if t is None
        )
    else:
        (small_vocab, small_special), (large_vocab, large_special) = small_tok, large_tok
        if small_vocab != large_vocab:
            same_size = len(small_vocab) == len(large_vocab)
            problem = (
                f"their tokenizer.json vocabularies differ ({len(small_vocab)} and "
                f"{len(large_vocab)} tokens{', other tokens or ids' if same_size else ''})"
            )
        elif small_special != large_special:
            only_small = {t for t in small_special if large_special.get(t) != small_special[t]}
            only_large = {t for t in large_special if small_special.get(t) != large_special[t]}
            problem = (
                "their special tokens differ (draft only: "
                f"{_few(only_small) or '-'}; large only: {_few(only_large) or '-'})"
            )
    if problem is None:
        return []
    message = (
        f"--speculative: {small} (draft) and {large}: {problem}. Drafts in another tokenizer's "
        "ids are mostly rejected; pass --force-speculative to start anyway."
    )
    if not force:
        raise ServeError(message)
    return [message]
