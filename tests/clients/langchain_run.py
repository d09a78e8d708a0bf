"""LangChain's ChatOpenAI against the gateway: `python langchain_run.py BASE_URL`.

Runs in the client-libraries virtualenv (see tests/integration/test_agents_sdk.py) with
LangChain's default model name, and prints one JSON line: a reply, a streamed reply, a
second turn that re-sends the history (as LangChain apps do), and a Responses API reply.
"""

from __future__ import annotations

import json
import sys

from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr


def main(base_url: str) -> None:
    llm = ChatOpenAI(base_url=base_url, api_key=SecretStr("sk-langchain"), max_retries=0, timeout=30)
    first = llm.invoke([HumanMessage("my name is Ada")])
    streamed = "".join(str(chunk.content) for chunk in llm.stream("stream langchain"))
    history = [
        HumanMessage("my name is Ada"),
        AIMessage(str(first.content)),
        HumanMessage("[sim:recall] who?"),
    ]
    second = llm.invoke(history)
    responses = ChatOpenAI(
        base_url=base_url, api_key=SecretStr("sk-langchain"), use_responses_api=True, max_retries=0
    )
    via_responses = responses.invoke("responses langchain")
    print(
        json.dumps(
            {
                "model": llm.model_name,
                "first": first.content,
                "streamed": streamed,
                "second": second.content,
                "responses": via_responses.text,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
