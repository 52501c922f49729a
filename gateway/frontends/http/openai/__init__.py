"""The OpenAI-compatible door (``/v1``): completions, chat, embeddings (``api``), fine-tuning jobs
and files (``tuning``), OpenAI's error body (``errors``); request models, conversions and the
server-sent-event streams beside them."""
