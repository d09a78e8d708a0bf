"""OpenAI's legacy Completions API (`prompt` → `text_completion`): routes, parsing, rendering."""
