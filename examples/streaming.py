"""Streaming: reasoning deltas while steps are produced, a record per step, then the answer."""

import asyncio

from _servers import router


async def main() -> None:
    model = router(max_reasoning_tokens=256, max_tokens=96)
    total = None
    async for chunk in model.astream("How many minutes are there in a week?"):
        if delta := chunk.additional_kwargs.get("reasoning_content"):
            print(delta, end="", flush=True)
        for step in chunk.response_metadata.get("glimprouter_steps", []):
            print(f"\n  <- step {step['index']} by the {step['model']} model")
        if chunk.content:
            print(chunk.content, end="", flush=True)
        total = chunk if total is None else total + chunk
    assert total is not None
    print("\n\nblocks:", [block["type"] for block in total.content_blocks])
    print("usage:", total.usage_metadata)


asyncio.run(main())
