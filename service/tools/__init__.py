"""Emulated tool calling, structured output and the answer limits the gateway enforces itself.

The upstream (Copilot / Bing Chat) has no function-calling API, no JSON mode, no stop
sequences and no token limit. This package builds each of them once, below the wire
formats, so every API surface gets them:

    options      the neutral `TurnOptions` a surface parses its body into (travels in the job)
    prompts      the instruction block, the tool-choice line, repair prompts, tool results
                 and the transcript text of an assistant turn that called tools
    parser       the strict tool-call format, a tolerant parser and the streaming filter
                 that keeps the call's markup away from the client
    structured   extracting and validating a JSON answer (`response_format`)

Plain modules: no Flask, no websocket code; the worker applies them in
`workers.tooling`, the web tier renders the neutral `tool_call` relay events.
"""
