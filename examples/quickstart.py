"""Quick start: one routed question, the answer, the chain and the routing record."""

from _servers import router

model = router(max_reasoning_tokens=256, max_tokens=128)
msg = model.invoke("Find the sum of all positive divisors of 2024.")

record = msg.response_metadata["glimprouter"]
for step in record["steps"]:
    print(
        f"step {step['index']}: {step['model']:<5} H_init={step['h_init']}  {step['text'][:50]!r}"
    )
print("answer:", msg.content)
print(
    f"{record['n_steps']} steps, intervention rate {record['intervention_rate']:.0%}, "
    f"requests {record['requests']}, tokens {record['tokens']}, {record['latency_s']:.2f} s"
)
print("usage:", msg.usage_metadata)
