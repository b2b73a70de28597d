"""The router in an LCEL pipe, with a callback handler that sees every routing decision."""

from typing import Any

from _servers import router
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_glimprouter import STEP_EVENT


class PrintSteps(BaseCallbackHandler):
    """Prints one line per routed step, as the step finishes."""

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == STEP_EVENT:
            print(f"  [{data['model']}] step {data['index']} H_init={data['h_init']}")


prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "Reason step by step. Put a blank line between steps."),
        ("human", "{question}"),
    ]
)
chain = prompt | router(max_reasoning_tokens=256, max_tokens=96) | StrOutputParser()

answers = chain.batch(
    [{"question": "What is 17 * 23?"}, {"question": "Is 221 a prime number?"}],
    config={"callbacks": [PrintSteps()]},
)
for answer in answers:
    print("answer:", answer)
