//! The agent harness: a real LLM tool-calling loop over OpenAI-compatible chat completions, run
//! on scenarios against a `Gateway` and judged from evidence.
